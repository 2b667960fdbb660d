from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from manga_assets.model.convlstm import ConvLSTM, conv_lstm_flops


def naive_convlstm(layer: ConvLSTM, x: torch.Tensor, state=None) -> tuple[torch.Tensor, tuple]:
    """Textbook ConvLSTM: one conv per gate on concat(x_t, h), weights sliced from the layer."""
    batch, steps, _, height, width = x.shape
    hidden_channels = layer.hidden_channels
    if state is None:
        hidden = torch.zeros(batch, hidden_channels, height, width, dtype=x.dtype)
        cell = torch.zeros_like(hidden)
    else:
        hidden, cell = state
    weight, bias = layer.conv.weight, layer.conv.bias
    pad = layer.kernel_size // 2

    def gate(index: int, inputs: torch.Tensor) -> torch.Tensor:
        rows = slice(index * hidden_channels, (index + 1) * hidden_channels)
        return F.conv2d(inputs, weight[rows], bias[rows], padding=pad)

    outputs = []
    for step in range(steps):
        inputs = torch.cat([x[:, step], hidden], dim=1)
        i = torch.sigmoid(gate(0, inputs))
        f = torch.sigmoid(gate(1, inputs))
        o = torch.sigmoid(gate(2, inputs))
        g = torch.tanh(gate(3, inputs))
        cell = f * cell + i * g
        hidden = o * torch.tanh(cell)
        outputs.append(hidden)
    return torch.stack(outputs, dim=1), (hidden, cell)


def test_shapes_and_last_output_is_final_hidden_state():
    layer = ConvLSTM(3, 4, kernel_size=3)
    x = torch.randn(2, 5, 3, 6, 7)
    outputs, (hidden, cell) = layer(x)
    assert outputs.shape == (2, 5, 4, 6, 7)
    assert hidden.shape == cell.shape == (2, 4, 6, 7)
    assert torch.equal(outputs[:, -1], hidden)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_matches_naive_reference_forward_and_backward(kernel_size: int):
    torch.manual_seed(0)
    layer = ConvLSTM(2, 5, kernel_size=kernel_size)
    with torch.no_grad():  # non-trivial biases so that every gate matters
        layer.conv.bias.normal_()
    x = torch.randn(3, 6, 2, 8, 8, requires_grad=True)
    upstream = torch.randn(3, 6, 5, 8, 8)

    outputs, (hidden, cell) = layer(x)
    grads = torch.autograd.grad((outputs * upstream).sum() + cell.sum(), [x, layer.conv.weight])
    expected, (expected_hidden, expected_cell) = naive_convlstm(layer, x)
    expected_grads = torch.autograd.grad(
        (expected * upstream).sum() + expected_cell.sum(), [x, layer.conv.weight]
    )

    torch.testing.assert_close(outputs, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(cell, expected_cell, atol=1e-5, rtol=0)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_initial_state_is_honoured():
    torch.manual_seed(1)
    layer = ConvLSTM(2, 3)
    x = torch.randn(2, 6, 2, 5, 5)
    state = (torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5))

    outputs, _ = layer(x, state)
    expected, _ = naive_convlstm(layer, x, state)
    torch.testing.assert_close(outputs, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(outputs, layer(x)[0], atol=1e-3)

    # Running two halves, the second from the state the first ends in, equals one full run.
    first, first_state = layer(x[:, :3])
    second, _ = layer(x[:, 3:], first_state)
    full, _ = layer(x)
    torch.testing.assert_close(torch.cat([first, second], dim=1), full, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kernel_size", [2, 4, 0])
def test_even_kernel_is_refused(kernel_size: int):
    with pytest.raises(ValueError, match="kernel_size must be a positive odd integer"):
        ConvLSTM(1, 4, kernel_size=kernel_size)


def test_wrong_input_and_state_shapes_are_refused():
    layer = ConvLSTM(2, 3)
    with pytest.raises(ValueError, match=r"\(batch, time, 2, height, width\)"):
        layer(torch.randn(2, 4, 3, 5, 5))
    with pytest.raises(ValueError, match="initial state must be two tensors of shape"):
        layer(torch.randn(2, 4, 2, 5, 5), (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)))


def test_flop_count():
    # 2 * B * T * H * W * 4C * (C_in + C) * k^2 forward, x3 with backward.
    assert conv_lstm_flops(1, 1, 1, 1, 1, 1, 1, backward=False) == 2 * 4 * 2
    assert conv_lstm_flops(2, 3, 1, 4, 5, 6, 3) == 3 * 2 * 2 * 3 * 5 * 6 * 16 * 5 * 9


@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile on CPU needs a C++ compiler",
)
def test_compiled_step_matches_eager():
    torch.manual_seed(2)
    layer = ConvLSTM(2, 4)
    x = torch.randn(2, 5, 2, 6, 6, requires_grad=True)
    eager, _ = layer(x)
    (eager_grad,) = torch.autograd.grad(eager.square().sum(), x)
    layer.use_compiled_step = True
    compiled, _ = layer(x)
    (compiled_grad,) = torch.autograd.grad(compiled.square().sum(), x)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)
    torch.testing.assert_close(compiled_grad, eager_grad, atol=1e-5, rtol=1e-5)
