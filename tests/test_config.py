"""One configuration path: the options a user sets are defined once (DecisionOptions) and reach
the identifier and FAISS from SHELLID_* variables."""

from __future__ import annotations

import argparse
from pathlib import Path

import faiss
import pytest

from api.app import create_app
from api.cli import main
from api.commands._options import add_model_options, load_config, options_from
from api.settings import (
    CommandLineSettings,
    ServiceSettings,
    SettingsError,
    load_settings,
    reference,
)
from embedder.cache_dir import default_cache_dir
from embedder.feature_cache import default_features_dir
from embedder.heads import HEADS
from embedder.settings import (
    HEAD_KINDS,
    EmbedderSettings,
    TrainingConfig,
    env_name,
    settings_problems,
)
from index.config import DEFAULT_TARGET_RECALL, DecisionOptions, IdentifierConfig, IndexSettings
from index.search import VectorIndex


def test_every_user_option_reaches_the_identifier_config(monkeypatch):
    monkeypatch.setenv("SHELLID_METHOD", "prototype")
    monkeypatch.setenv("SHELLID_SPECIES_PROBABILITY", "0.7")
    monkeypatch.setenv("SHELLID_TARGET_RECALL", "0.8")
    monkeypatch.setenv("SHELLID_FAISS_THREADS", "2")
    config = IndexSettings().identifier_config()
    assert (config.method, config.species_probability, config.target_recall) == (
        "prototype",
        0.7,
        0.8,
    )
    assert config.faiss_threads == 2
    for name in DecisionOptions.model_fields:  # defined once, inherited by both
        assert repr(IdentifierConfig.model_fields[name]) == repr(IndexSettings.model_fields[name])


def test_faiss_threads_follow_the_config():
    try:
        VectorIndex(4, threads=2)
        assert faiss.omp_get_max_threads() == 2
        VectorIndex(4)  # no setting: the count stays
        assert faiss.omp_get_max_threads() == 2
    finally:
        VectorIndex(4, threads=1)
    assert faiss.omp_get_max_threads() == 1


# ------------------------------------------------------------------ the settings tree
#: Every environment variable deployments and the docs (README, docs/api.md, docs/index.md)
#: name; renaming one breaks them.
DOCUMENTED_VARIABLES = {
    "SHELLID_STORE",
    "SHELLID_MODEL",
    "SHELLID_RUNTIME",
    "SHELLID_CACHE_DIR",
    "SHELLID_CACHE",
    "SHELLID_API_KEY",
    "SHELLID_READ_KEY",
    "SHELLID_MAX_FILE_BYTES",
    "SHELLID_MAX_QUERY_FILES",
    "SHELLID_MAX_ENROLL_FILES",
    "SHELLID_MAX_PIXELS",
    "SHELLID_MAX_SIDE",
    "SHELLID_MIN_SIDE",
    "SHELLID_MAX_ASPECT_RATIO",
    "SHELLID_MAX_IMAGE_COST",
    "SHELLID_BATCH_WAIT_MS",
    "SHELLID_BATCH_MAX_IMAGES",
    "SHELLID_EMBED_WORKERS",
    "SHELLID_TORCH_THREADS",
    "SHELLID_REFRESH_SECONDS",
    "SHELLID_SUBJECT",
    "SHELLID_TOP_K",
    "SHELLID_TARGET_RECALL",
    "SHELLID_UNKNOWN_THRESHOLD",
    "SHELLID_OOD_THRESHOLD",
    "SHELLID_TEMPERATURE",
    "SHELLID_METHOD",
    "SHELLID_SPECIES_PROBABILITY",
    "SHELLID_GENUS_PROBABILITY",
    "SHELLID_FAMILY_PROBABILITY",
    "SHELLID_KEEP_VERSIONS_MINUTES",
    "SHELLID_COMPACT_EVERY",
    "SHELLID_ANN_THRESHOLD",
    "SHELLID_ANN_FACTORY",
    "SHELLID_ANN_NPROBE",
    "SHELLID_USE_GPU",
    "SHELLID_FAISS_THREADS",
    "SHELLID_DEBUG",
    "SHELLID_SHARED",
}
REPO = Path(__file__).resolve().parents[1]


def _variables(*models: type) -> set[str]:
    return {env_name(name) for model in models for name in model.model_fields}


def test_environment_names_are_unchanged():
    assert not DOCUMENTED_VARIABLES - _variables(ServiceSettings, CommandLineSettings)
    # one tree: each layer holds the one below it
    assert issubclass(ServiceSettings, IndexSettings) and issubclass(
        IndexSettings, EmbedderSettings
    )
    assert set(DecisionOptions.model_fields) <= set(IndexSettings.model_fields)


def test_nested_settings_load_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SHELLID_RUNTIME", " Torch ")
    monkeypatch.setenv("SHELLID_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SHELLID_METHOD", "knn")
    monkeypatch.setenv("SHELLID_MAX_SIDE", "4096")
    monkeypatch.setenv("SHELLID_REFRESH_SECONDS", "0")
    settings = load_settings()
    assert (settings.runtime, settings.cache_root()) == ("torch", tmp_path / "cache")
    assert settings.identifier_config().method == "knn"
    assert settings.intake_limits().max_side == 4096 and settings.refresh_seconds == 0
    assert settings.features_dir() == tmp_path / "cache" / "features"
    # the settings are read once and passed down: the embedder never reads the variables
    assert default_cache_dir() != tmp_path / "cache"
    assert default_features_dir() != tmp_path / "cache" / "features"


def test_the_model_of_a_collection_takes_runtime_and_cache_from_the_settings(monkeypatch, tmp_path):
    from index.workflows.collection import Collection
    from index.workflows.models import LazyEmbedder

    monkeypatch.setenv("SHELLID_RUNTIME", "torch")
    monkeypatch.setenv("SHELLID_CACHE_DIR", str(tmp_path / "cache"))
    settings = IndexSettings.load({"store": str(tmp_path / "store")})
    monkeypatch.delenv("SHELLID_RUNTIME")  # read once, at the entry point
    monkeypatch.delenv("SHELLID_CACHE_DIR")
    collection = Collection.open(settings=settings, create=True)
    lazy = collection._embedder
    assert isinstance(lazy, LazyEmbedder)
    assert (lazy.runtime, lazy.cache_dir) == ("torch", tmp_path / "cache")


def test_opening_a_collection_reads_no_variable_only_the_settings_it_is_given(
    monkeypatch, tmp_path
):
    from index.config import IndexSettings
    from index.workflows.collection import Collection
    from index.workflows.models import LazyEmbedder

    for name in ("STORE", "MODEL", "TOP_K", "MAX_SIDE", "RUNTIME", "METHOD"):
        monkeypatch.delenv(f"SHELLID_{name}", raising=False)
    settings = IndexSettings.load({"store": str(tmp_path / "mine"), "top_k": 3})
    monkeypatch.setenv("SHELLID_STORE", str(tmp_path / "theirs"))  # set after the entry point
    monkeypatch.setenv("SHELLID_MODEL", "tf_efficientnet_lite2")
    monkeypatch.setenv("SHELLID_TOP_K", "9")
    monkeypatch.setenv("SHELLID_MAX_SIDE", "100")
    monkeypatch.setenv("SHELLID_RUNTIME", "onnx")
    monkeypatch.setenv("SHELLID_METHOD", "knn")
    collection = Collection.open(settings=settings, create=True)
    assert (tmp_path / "mine").exists() and not (tmp_path / "theirs").exists()
    assert collection.settings.top_k == 3 and collection._limits.max_side == settings.max_side
    assert collection.index.config == settings.identifier_config()
    lazy = collection._embedder
    assert isinstance(lazy, LazyEmbedder)
    assert (lazy.spec, lazy.runtime) == (None, settings.runtime)
    with pytest.raises(TypeError, match="settings"):
        Collection.open(tmp_path / "mine")  # type: ignore[call-arg]  # settings are required


def test_every_identifier_option_is_a_variable_and_an_option_of_identify_and_serve(monkeypatch):
    from api.commands import identify_cmd, serve_cmd
    from api.commands._collection import settings_from

    in_code_only = set(IdentifierConfig.model_fields) - set(IndexSettings.model_fields)
    assert in_code_only == {"seed"}
    for command in (identify_cmd, serve_cmd):
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        options = {a.dest for a in parser._actions}
        assert set(DecisionOptions.model_fields) <= options, command.__name__
    parser = argparse.ArgumentParser()
    identify_cmd.add_arguments(parser)
    monkeypatch.setenv("SHELLID_OOD_K", "7")
    args = parser.parse_args(["x.jpg", "--feature-power", "1", "--no-centre"])
    config = settings_from(args).identifier_config()
    assert (config.feature_power, config.centre, config.ood_k) == (1.0, False, 7)


def test_generated_options_carry_type_bounds_default_and_help(monkeypatch):
    parser = argparse.ArgumentParser()
    add_model_options(
        parser, IndexSettings, ["target_recall", "top_k", "model", "method", "use_gpu"]
    )
    actions = {a.dest: a for a in parser._actions}
    recall = actions["target_recall"]
    assert recall.option_strings == ["--target-recall"] and recall.type is float
    assert recall.default is None  # not given: the environment still applies
    assert "> 0.5, < 1" in recall.help and f"$SHELLID_TARGET_RECALL or {DEFAULT_TARGET_RECALL}" in (
        recall.help
    )
    assert recall.help.startswith(IndexSettings.model_fields["target_recall"].description)
    assert "≥ 1, ≤ 100" in actions["top_k"].help and actions["top_k"].type is int
    assert "the frozen default backbone" in actions["model"].help
    assert actions["method"].choices == ("whitened", "prototype", "knn", "prototype+knn")
    args = parser.parse_args(["--target-recall", "0.8", "--no-use-gpu"])
    assert options_from(args, IndexSettings) == {"target_recall": 0.8, "use_gpu": False}
    monkeypatch.setenv("SHELLID_TOP_K", "7")
    settings = IndexSettings.load(options_from(args, IndexSettings))
    assert (settings.target_recall, settings.top_k) == (0.8, 7)


def test_training_options_are_the_training_config():
    parser = argparse.ArgumentParser()
    add_model_options(parser, TrainingConfig)
    actions = {a.dest: a for a in parser._actions}
    defaults = TrainingConfig()
    for name, item in TrainingConfig.model_fields.items():
        assert actions[name].default == getattr(defaults, name), name
        assert str(item.description) in actions[name].help, name
    assert actions["group_pattern"].option_strings == ["--group-regex"]
    assert actions["head"].choices == tuple(HEADS) == HEAD_KINDS
    args = parser.parse_args(["--epochs", "3", "--normalize-shells", "--group-regex", "specimen"])
    config = TrainingConfig(**options_from(args, TrainingConfig))
    assert (config.epochs, config.normalize_shells, config.group_pattern) == (3, True, "specimen")
    assert config.lr == defaults.lr
    with pytest.raises(ValueError, match="invalid setting --epochs: Input should be greater"):
        load_config(TrainingConfig, parser.parse_args(["--epochs", "0"]))
    checked = argparse.ArgumentParser()
    add_model_options(checked, TrainingConfig, ["epochs"], check=True)
    with pytest.raises(SystemExit):  # checked: a value the field refuses is argparse's error
        checked.parse_args(["--epochs", "0"])


@pytest.mark.parametrize(
    ("argv", "variables", "message"),
    [
        (["species"], {"SHELLID_TOP_K": "0"}, "SHELLID_TOP_K: Input should be greater than"),
        (["species"], {"SHELLID_DEBUG": "maybe"}, "SHELLID_DEBUG: Input should be a valid"),
        (["identify", "x.jpg", "--target-recall", "2"], {}, "--target-recall: Input should be"),
        (["serve", "--port", "0"], {"SHELLID_MAX_SIDE": "-1"}, "SHELLID_MAX_SIDE: Input should"),
        (["species"], {"SHELLID_RUNTIME": "tpu"}, "SHELLID_RUNTIME: unknown runtime 'tpu'"),
    ],
)
def test_invalid_values_are_one_line_on_the_command_line(
    argv, variables, message, monkeypatch, tmp_path, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.jpg").write_bytes(b"not read: the settings fail first")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("shellid: error: ") and message in err


def test_a_bad_runtime_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv("SHELLID_RUNTIME", "tensorflow")
    with pytest.raises(SettingsError) as caught:
        EmbedderSettings.load()
    assert str(caught.value) == (
        "invalid setting SHELLID_RUNTIME: unknown runtime 'tensorflow'; choose one of auto, "
        "torch, onnx"
    )


def test_the_service_refuses_to_start_on_a_bad_variable(monkeypatch):
    monkeypatch.setenv("SHELLID_MAX_QUERY_FILES", "none")
    with pytest.raises(SettingsError, match=r"^invalid setting SHELLID_MAX_QUERY_FILES: "):
        create_app()


def test_settings_errors_have_one_home():
    """The CLI, the service and the embedder format settings errors with one function."""
    import api.commands._collection as collection_options
    import api.settings

    assert api.settings.settings_problems is settings_problems
    assert api.settings.SettingsError is SettingsError
    assert "settings_problems" not in vars(collection_options)


def test_no_environment_reads_outside_settings_modules():
    settings_modules = {"embedder/settings.py", "index/config.py", "api/settings.py"}
    readers = []
    for package in ("embedder", "index", "api"):
        for path in (REPO / package).rglob("*.py"):
            relative = path.relative_to(REPO).as_posix()
            text = path.read_text(encoding="utf-8")
            if relative not in settings_modules and ("os.environ" in text or "getenv" in text):
                readers.append(relative)
    assert readers == []


def test_the_configuration_reference_is_generated_from_the_models():
    """docs/configuration.md is ``python -m api.settings``: regenerate it when a setting
    changes."""
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert text == reference(), "docs/configuration.md is stale: python -m api.settings > it"
    for variable in _variables(ServiceSettings, CommandLineSettings):
        assert f"`{variable}`" in text
    for doc in ("README.md", "docs/api.md"):
        assert "configuration.md" in (REPO / doc).read_text(encoding="utf-8"), doc


def test_the_top_level_help_builds_no_settings_options():
    """Options generated from the settings cost pydantic; ``shellid --help`` builds none."""
    import subprocess
    import sys

    probe = (
        "import sys\nfrom api.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
        "    pass\nprint('pydantic_settings' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert done.stderr.strip().splitlines()[-1] == "False"
