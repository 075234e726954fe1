"""The tiny model and tokenizer, and loading a saved model through the Hugging Face path."""

import torch

from trainer.tiny import build_tiny_model_and_tokenizer, load_model_and_tokenizer


def test_same_seed_same_weights_and_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, _ = build_tiny_model_and_tokenizer(seed=1)
    assert torch.equal(torch.rand(3), expected)  # building did not consume the caller's RNG
    b, _ = build_tiny_model_and_tokenizer(seed=1)
    c, _ = build_tiny_model_and_tokenizer(seed=2)
    w = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_tokenizer_round_trips_any_text(tokenizer):
    text = 'héllo wörld 🙂 {"a": [1, 2]}\n\t<|im_end|>'
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_load_tiny_and_saved_folder_give_the_same_model(tmp_path, tiny_pair):
    model, tokenizer = tiny_pair
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tok = load_model_and_tokenizer(str(tmp_path), dtype=torch.float32)
    tiny, _ = load_model_and_tokenizer("tiny")
    messages = [{"role": "user", "content": "Pick a number."}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert (
        loaded_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == ids
    )
    x = torch.tensor([tokenizer.encode(ids, add_special_tokens=False)])
    with torch.no_grad():
        ref = model(x).logits
        torch.testing.assert_close(loaded(x).logits, ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(tiny(x).logits, ref, rtol=0, atol=1e-6)


def test_generate_stops_and_pads(tiny_pair):
    model, tokenizer = tiny_pair
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    torch.manual_seed(0)
    out = model.generate(**prompt, do_sample=True, max_new_tokens=5, num_return_sequences=3)
    assert out.shape[0] == 3 and out.shape[1] <= prompt["input_ids"].shape[1] + 5
