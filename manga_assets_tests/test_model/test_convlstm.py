from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from manga_assets.model.convlstm import ConvLSTM, conv_lstm_flops


def naive_convlstm(layer: ConvLSTM, x: torch.Tensor, state=None) -> tuple[torch.Tensor, tuple]:
    """Textbook ConvLSTM: per gate, a conv of x_t plus a conv of h, weights sliced from the
    layer, the input indexed per step."""
    batch, steps, _, height, width = x.shape
    hidden_channels = layer.hidden_channels
    if state is None:
        hidden = torch.zeros(batch, hidden_channels, height, width, dtype=x.dtype)
        cell = torch.zeros_like(hidden)
    else:
        hidden, cell = state
    x_conv, h_conv = layer.input_conv, layer.hidden_conv

    def gate(index: int, x_t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        rows = slice(index * hidden_channels, (index + 1) * hidden_channels)
        from_x = F.conv2d(x_t, x_conv.weight[rows], x_conv.bias[rows], padding=x_conv.padding)
        return from_x + F.conv2d(h, h_conv.weight[rows], padding=h_conv.padding)

    outputs = []
    for step in range(steps):
        x_t = x[:, step]
        i = torch.sigmoid(gate(0, x_t, hidden))
        f = torch.sigmoid(gate(1, x_t, hidden))
        o = torch.sigmoid(gate(2, x_t, hidden))
        g = torch.tanh(gate(3, x_t, hidden))
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


# Equal kernels run as one convolution of concat(x_t, h); unequal ones as two per step.
@pytest.mark.parametrize("kernel_size, input_kernel_size", [(1, 1), (3, 3), (5, 5), (3, 1), (5, 3)])
def test_matches_naive_reference_forward_and_backward(kernel_size: int, input_kernel_size: int):
    torch.manual_seed(0)
    layer = ConvLSTM(2, 5, kernel_size=kernel_size, input_kernel_size=input_kernel_size)
    with torch.no_grad():  # non-trivial biases so that every gate matters
        layer.input_conv.bias.normal_()
    x = torch.randn(3, 6, 2, 8, 8, requires_grad=True)
    upstream = torch.randn(3, 6, 5, 8, 8)
    weights = [layer.input_conv.weight, layer.hidden_conv.weight, layer.input_conv.bias]

    outputs, (hidden, cell) = layer(x)
    grads = torch.autograd.grad((outputs * upstream).sum() + cell.sum(), [x, *weights])
    expected, (expected_hidden, expected_cell) = naive_convlstm(layer, x)
    expected_grads = torch.autograd.grad(
        (expected * upstream).sum() + expected_cell.sum(), [x, *weights]
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


def test_forward_gates_is_forward_from_the_input_convolutions():
    torch.manual_seed(3)
    layer = ConvLSTM(2, 3, kernel_size=3, input_kernel_size=1)
    x = torch.randn(2, 5, 2, 6, 6)
    state = (torch.randn(2, 3, 6, 6), torch.randn(2, 3, 6, 6))
    outputs, (hidden, cell) = layer(x, state)
    gates = [layer.input_conv(frame) for frame in x.unbind(1)]
    from_gates, (gates_hidden, gates_cell) = layer.forward_gates(gates, state)
    torch.testing.assert_close(from_gates, outputs, atol=1e-6, rtol=0)
    torch.testing.assert_close(gates_cell, cell, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="input gates must have 12 channels"):
        layer.forward_gates([torch.zeros(2, 6, 6, 6)])


def test_a_model_saved_with_one_joint_convolution_loads_as_the_same_layer():
    """Layers saved before the input and recurrent convolutions were apart held one
    convolution of concat(x_t, h): loading splits it, and the layer computes what it did."""
    torch.manual_seed(4)
    joint = torch.nn.Conv2d(2 + 3, 12, 3, padding=1)
    x = torch.randn(2, 4, 2, 5, 5)
    hidden = cell = torch.zeros(2, 3, 5, 5)
    expected = []
    for x_t in x.unbind(1):
        i, f, o, g = joint(torch.cat([x_t, hidden], dim=1)).chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        expected.append(hidden)

    layer = ConvLSTM(2, 3)
    layer.load_state_dict({"conv.weight": joint.weight, "conv.bias": joint.bias})
    outputs, _ = layer(x)
    torch.testing.assert_close(outputs, torch.stack(expected, dim=1), atol=1e-6, rtol=0)
    # A joint convolution cannot be split into kernels of two sizes: refused, not guessed.
    with pytest.raises(RuntimeError, match="conv.weight"):
        ConvLSTM(2, 3, input_kernel_size=1).load_state_dict(
            {"conv.weight": joint.weight, "conv.bias": joint.bias}
        )


@pytest.mark.parametrize("kernel_size", [2, 4, 0])
def test_even_kernel_is_refused(kernel_size: int):
    with pytest.raises(ValueError, match="kernel_size must be a positive odd integer"):
        ConvLSTM(1, 4, kernel_size=kernel_size)
    with pytest.raises(ValueError, match="input_kernel_size must be a positive odd integer"):
        ConvLSTM(1, 4, input_kernel_size=kernel_size)


def test_wrong_input_and_state_shapes_are_refused():
    layer = ConvLSTM(2, 3)
    with pytest.raises(ValueError, match=r"\(batch, time, 2, height, width\)"):
        layer(torch.randn(2, 4, 3, 5, 5))
    with pytest.raises(ValueError, match="initial state must be two tensors of shape"):
        layer(torch.randn(2, 4, 2, 5, 5), (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)))


def test_flop_count():
    # 2 * B * T * H * W * 4C * (C_in k_in^2 + C k^2) forward, x3 with backward.
    assert conv_lstm_flops(1, 1, 1, 1, 1, 1, 1, backward=False) == 2 * 4 * 2
    assert conv_lstm_flops(2, 3, 1, 4, 5, 6, 3) == 3 * 2 * 2 * 3 * 5 * 6 * 16 * 5 * 9
    assert conv_lstm_flops(2, 3, 1, 4, 5, 6, 3, input_kernel_size=1) == (
        3 * 2 * 2 * 3 * 5 * 6 * 16 * (1 + 4 * 9)
    )


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
