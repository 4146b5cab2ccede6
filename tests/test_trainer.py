"""transformers' Trainer fine-tunes qkernels models with no workaround: LoRA on an int8
base (loaded with QKernelsConfig, or swapped from float) and QAT, gradient checkpointing
on and off; loss falls and only what should train changes. A purely int8 model is still
refused, as Trainer refuses every purely quantized model."""

import pytest
import torch

import qkernels

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from hf_models import tiny_llama  # noqa: E402

from qkernels.hf import QKernelsConfig  # noqa: E402


def llama():
    return tiny_llama(vocab_size=64)


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Repeating(torch.utils.data.Dataset):
    """Counting sequences (each token the one before plus 1): a model that trains at all
    learns the rule within a few steps."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        starts = torch.randint(0, 64, (8, 1), generator=g)
        self.ids = (starts + torch.arange(16)) % 64

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def train(model, tmp_path, checkpointing: bool, lr: float = 3e-2) -> list[float]:
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=20,
        learning_rate=lr,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        gradient_checkpointing=checkpointing,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Repeating())
    trainer.train()
    return [e["loss"] for e in trainer.state.log_history if "loss" in e]


def falls(losses: list[float]) -> bool:
    """The last three steps' mean loss 10% under the first step's (PEFT LoRA on the float
    model: 4.16 -> 3.58 over these 20 steps)."""
    return sum(losses[-3:]) / 3 < 0.9 * losses[0]


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before, model) -> set[str]:
    after = model.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("base", ["w8a8", "w8a16"])
def test_trainer_fine_tunes_lora_on_a_quantize_on_load_model(tmp_path, base, checkpointing):
    llama().save_pretrained(tmp_path / "float")
    model = transformers.LlamaForCausalLM.from_pretrained(
        tmp_path / "float", quantization_config=QKernelsConfig(base)
    )
    qkernels.swap(model, "lora", r=4, alpha=8, target_modules=TARGETS)
    before = snapshot(model)
    losses = train(model, tmp_path, checkpointing)
    assert falls(losses)
    moved = changed(before, model)
    assert moved and all(".lora_A" in k or ".lora_B" in k for k in moved), moved
    # The adapter, saved in PEFT's format, reloads to the same logits through qkernels
    # and through PEFT itself, onto a fresh int8 load.
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(5))
    model.eval()
    with torch.no_grad():
        expected = model(ids).logits
    qkernels.save_adapters(model, tmp_path / "adapter")
    fresh = transformers.LlamaForCausalLM.from_pretrained(
        tmp_path / "float", quantization_config=QKernelsConfig(base)
    ).eval()
    qkernels.load_adapters(fresh, tmp_path / "adapter")
    peft = pytest.importorskip("peft")
    other = transformers.LlamaForCausalLM.from_pretrained(
        tmp_path / "float", quantization_config=QKernelsConfig(base)
    )
    other = peft.PeftModel.from_pretrained(other, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, expected, rtol=0, atol=0)
        torch.testing.assert_close(other(ids).logits, expected, rtol=0, atol=0)


def test_trainer_fine_tunes_a_swapped_lora_model_and_qat(tmp_path):
    model = llama()
    qkernels.swap(model, "lora", r=4, alpha=8, target_modules=TARGETS)
    before = snapshot(model)
    losses = train(model, tmp_path, checkpointing=False)
    assert falls(losses)
    assert all(".lora_" in k for k in changed(before, model))
    qat = llama()
    qkernels.swap(qat, "qat")
    losses = train(qat, tmp_path, checkpointing=True, lr=3e-3)  # every weight trains
    assert falls(losses)


def test_trainer_refuses_a_purely_int8_model(tmp_path):
    model = llama()
    qkernels.swap(model, "w8a8")
    with pytest.raises(ValueError, match="purely quantized"):
        train(model, tmp_path, checkpointing=False)
