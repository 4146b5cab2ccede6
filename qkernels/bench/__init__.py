"""Benchmark suites behind `qkernels bench`: each times qkernels against what users
would pick instead, in one process, and reports medians and ratios through `report`.

    linear  Int8Linear vs fp32/bf16 nn.Linear, torch.ao dynamic int8, torchao (CPU)
    lstm    Int8LSTM vs nn.LSTM and torch.ao's dynamic int8 LSTM (CPU)
    qat     fake-quant / LSQ and QAT training steps vs torch's fake-quant ops (CPU)
    gpu     the Triton GEMM family and lowrank_mm vs cuBLAS, bf16, torchao (GPU)
"""
