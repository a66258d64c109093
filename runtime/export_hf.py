"""`nlc export RUN --hf OUT`: a run as a directory that transformers loads with trust_remote_code.

OUT holds

- `config.json`: model_type `nlc`, an `auto_map` to the classes below, the vocabulary and the spec's
  name and sha256; `generation_config.json`;
- `model.safetensors`: the weights of the run's last checkpoint, keys `model.<state_dict key>`;
- `modeling_nlc.py`: `NlcConfig` and `NlcForCausalLM` (a `PreTrainedModel` with generation), rendered
  from `codegen/templates/hf_modeling.py.jinja`; it imports `nlc_compiled.py`, the compiled
  package's model.py (a relative import of one file, the form transformers copies along);
- `nlc_package/`: the whole compiled package (spec, level graph, plan, manifest), which
  `nldsl.load(OUT/nlc_package)` also loads.

Loading needs the nlc runtime (`nldsl`) and, for the transformers classes, transformers; exporting
needs neither transformers nor a network.
"""

from __future__ import annotations

import functools
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Union

from .generate import RunError, load_run

MODELING = "modeling_nlc.py"
COMPILED = "nlc_compiled.py"
PACKAGE = "nlc_package"


@functools.lru_cache(maxsize=None)
def _template():
    import jinja2

    text = resources.files("nldsl.codegen").joinpath("templates", "hf_modeling.py.jinja").read_text(encoding="utf-8")
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=False).from_string(text)


def export_hf(run_dir: Union[str, Path], out: Union[str, Path], *, force: bool = False) -> Path:
    """Write the transformers directory of RUN to OUT; refuses a non-empty OUT unless `force`."""
    from safetensors.torch import save_file

    from nldsl import __version__

    run = load_run(run_dir, dtype=None)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise RunError(f"{out} is not empty; choose another directory or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    package = run.path / "model"
    if (package / PACKAGE).exists():
        raise RunError(f"{package} looks damaged (it holds a folder named {PACKAGE})")
    dtype = str(next(run.model.parameters()).dtype).replace("torch.", "")
    model_name = run.manifest.get("model", "model")
    config = {
        "architectures": ["NlcForCausalLM"], "model_type": "nlc",
        "auto_map": {"AutoConfig": "modeling_nlc.NlcConfig", "AutoModelForCausalLM": "modeling_nlc.NlcForCausalLM"},
        "vocab_size": int(getattr(run.model, "vocab_size", 256)), "context": run.context,
        "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0, "torch_dtype": dtype, "dtype": dtype,
        "nlc_model": model_name, "nlc_spec_sha256": run.spec_sha256, "nlc_version": __version__,
        "nlc_step": run.step, "tie_word_embeddings": False,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    generation = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0, "do_sample": True, "temperature": 0.8}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")
    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in run.model.state_dict().items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / MODELING).write_text(_template().render(model=model_name, version=__version__,
                                                   spec_sha256=run.spec_sha256), encoding="utf-8")
    shutil.copyfile(package / "model.py", out / COMPILED)
    if (out / PACKAGE).exists():
        shutil.rmtree(out / PACKAGE)
    shutil.copytree(package, out / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    return out
