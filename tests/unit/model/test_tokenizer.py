import pytest
from gpt_model.protocol import ChatMessage
from gpt_model.tokenizer import ChatTokenizer, StreamDecoder, byte_level_tokenizer, load_tokenizer, train_bpe

pytestmark = pytest.mark.unit

UNICODE = "Grüße, 世界! 🚀🇫🇷 naïve café — ∑x² ½"


def test_byte_level_round_trip_on_unicode():
    tok = ChatTokenizer(byte_level_tokenizer())
    ids = tok.encode(UNICODE)
    assert len(ids) == len(UNICODE.encode("utf-8"))
    assert tok.decode(ids) == UNICODE


def test_trained_bpe_round_trip_saves_and_reloads(tmp_path):
    corpus = ["the quick brown fox jumps over the lazy dog " * 3, UNICODE, "hello world " * 10] * 20
    hf = train_bpe(corpus, vocab_size=400)
    tok = ChatTokenizer(hf)
    assert tok.vocab_size <= 400
    ids = tok.encode("the quick brown fox")
    assert len(ids) < len("the quick brown fox")  # merges were learnt
    tok.save(tmp_path)
    again = ChatTokenizer(load_tokenizer(tmp_path))
    assert again.encode(UNICODE) == tok.encode(UNICODE)
    assert again.decode(again.encode(UNICODE)) == UNICODE


def test_chat_template_and_stop_tokens():
    tok = ChatTokenizer(byte_level_tokenizer())
    prompt = tok.chat_prompt([ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")])
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode_chat([ChatMessage("user", "Hi")])
    assert ids[0] == tok.hf.convert_tokens_to_ids("<|im_start|>")
    assert tok.hf.convert_tokens_to_ids("<|im_end|>") in tok.eos_token_ids


def test_stream_decoder_never_splits_a_character():
    tok = ChatTokenizer(byte_level_tokenizer())
    dec = StreamDecoder(tok)
    pieces = [dec.push(i) for i in tok.encode(UNICODE)]
    pieces.append(dec.flush())
    assert "".join(pieces) == UNICODE
    assert all("\ufffd" not in p for p in pieces)
    assert pieces.count("") >= 10  # multi-byte characters were held until complete
