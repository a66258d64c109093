"""Every diagnostic code nlc can emit, with a one-line description (shown by `nlc explain`).

NL00xx: reading and parsing; NL01xx: names and structure; NL02xx: values, constants and dimensions;
NL03xx: clocks; NL04xx: flows and the level graph; NL05xx: update rules, objectives and stability;
NL06xx: lowering to code; NL09xx: internal.
"""

CODES = {
    # reading and syntax
    "NL0001": "the file cannot be read (missing, a directory, or not UTF-8 text)",
    "NL0002": "syntax error: an unexpected character",
    "NL0003": "syntax error: an unexpected token",
    "NL0004": "syntax error: the file ends in the middle of a construct",
    "NL0005": "the file is too large or nested too deeply to be a spec",
    "NL0006": "unsupported or malformed language version line",
    "NL0007": "an import cannot be resolved, or imports form a cycle",
    # names and structure
    "NL0101": "unknown name",
    "NL0102": "duplicate definition",
    "NL0103": "unknown property key for this kind of declaration",
    "NL0104": "a required property is missing",
    "NL0105": "the file defines no model, or more than one where one is needed",
    "NL0106": "unknown function or wrong use of a builtin",
    "NL0107": "wrong number or kind of arguments",
    "NL0108": "a declaration is used where another kind is expected",
    "NL0109": "a property is given more than once",
    "NL0110": "a block, chain, optimizer or network binding is declared but never used",
    "NL0111": "recursion among blocks",
    "NL0112": "a name shadows a builtin or an outer definition",
    # values, constants and dimensions
    "NL0201": "a value of the wrong type",
    "NL0202": "arithmetic error in a constant (division by zero, overflow)",
    "NL0203": "a size or count must be a positive integer",
    "NL0204": "dimension mismatch",
    "NL0205": "a value is out of its allowed range",
    "NL0206": "unknown word in a phrase",
    # clocks
    "NL0301": "malformed clock",
    "NL0302": "a level learns the initial state of a level that ticks slower than it",
    "NL0303": "a CMS period longer than the context: no window closes inside a sequence",
    "NL0304": "a chunk size that does not fit the clock or the context",
    "NL0305": "a CMS period of one token (one backward per token)",
    # flows and graph
    "NL0401": "a cycle among flows within one tick",
    "NL0402": "a level that never updates and owns nothing",
    "NL0403": "a flow of the wrong kind (e.g. a vector where a per-head gate is expected)",
    "NL0404": "a memory read with the wrong number of inputs",
    "NL0405": "the network is malformed: a stage that is not one, or not `embed` first and `lm_head` last",
    "NL0406": "a malformed attention prefix (segment, persistent tokens or per-segment context)",
    # rules, objectives, stability
    "NL0501": "unknown update rule or objective",
    "NL0502": "an invalid combination of update rules",
    "NL0503": "a gradient taken at the current state with a chunk larger than one",
    "NL0504": "a gate with an unbounded range",
    "NL0505": "a rule combination with no exact chunk-parallel form (falls back to a sequential path)",
    "NL0506": "delta-style rule with keys that are not normalised",
    "NL0507": "DGD may be unstable: α − 2η can be negative",
    "NL0508": "a custom objective that cannot be differentiated",
    "NL0509": "a gate that no update rule reads",
    "NL0510": "a memory whose update never writes (no rule takes a gradient)",
    "NL0511": "the `dot` objective towards a self-generated target: no maximum, the memory can grow without bound",
    # lowering
    "NL0601": "a construct that cannot be lowered to code",
    "NL0602": "the output directory holds other files",
    # internal
    "NL0901": "internal compiler error",
}
