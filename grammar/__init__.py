"""The .nl grammar (Lark), shipped as ``nldsl.grammar``."""
