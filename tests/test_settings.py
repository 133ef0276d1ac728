"""Settings from defaults, a TOML file and VLSCOPE_* environment variables; README documents each."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings, SettingsError, default_cache_dir, load_settings, settings_table_markdown


def test_defaults() -> None:
    s = load_settings(environ={})
    assert s.model == "Qwen/Qwen3-VL-4B-Instruct"
    assert (s.device, s.dtype, s.quantization, s.attn_implementation) == ("auto", "auto", "none", "auto")
    assert s.max_new_tokens == 512
    assert s.cache_dir == default_cache_dir({})  # the user's data folder, absolute


def test_env_overrides_toml_which_overrides_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "vlscope.toml"
    toml.write_text('model = "/models/qwen"\ndtype = "fp16"\ncache_size_limit_gb = 5\n', encoding="utf-8")
    env = {"VLSCOPE_CONFIG": str(toml), "VLSCOPE_DTYPE": "bf16", "VLSCOPE_MAX_UPLOAD_MB": "100", "OTHER": "x"}
    s = load_settings(environ=env)
    assert s.model == "/models/qwen"  # from the file
    assert s.dtype == "bf16"  # env wins
    assert s.cache_size_limit_gb == 5.0
    assert s.max_upload_mb == 100  # typed from a string


def test_vlscope_table_in_toml(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[vlscope]\nquantization = "4bit"\n', encoding="utf-8")
    assert load_settings(environ={}, config_file=toml).quantization == "4bit"


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"VLSCOPE_DTYPE": "int3"}, "VLSCOPE_DTYPE"),
        ({"VLSCOPE_DEVICE": "tpu"}, "cuda:N"),
        ({"VLSCOPE_MAX_NEW_TOKENS": "0"}, "max_new_tokens"),
        ({"VLSCOPE_CONFIG": "/nonexistent/vlscope.toml"}, "does not exist"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ=env)
    assert fragment in str(info.value)


def test_bad_toml_is_reported(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("model = \n", encoding="utf-8")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(environ={"VLSCOPE_CONFIG": str(toml)})


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"`VLSCOPE_{name.upper()}`" in readme, f"README lacks setting {name}"
    # the README table is the generated one (kept in sync)
    assert settings_table_markdown() in readme
