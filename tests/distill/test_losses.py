import math

import pytest
import torch
import torch.nn.functional as F

from leannet.distill import kd_loss, label_smoothing_loss, smoothed_targets, tfkd_reg_loss, virtual_teacher
from leannet.errors import LeannetError

LN3 = math.log(3.0)


def kl(p, q):
    return sum(pk * math.log(pk / qk) for pk, qk in zip(p, q, strict=True))


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
def test_kd_loss_golden_with_t_squared_and_batch_mean():
    t = 2.0
    student = torch.tensor([[0.0, 0.0], [2 * LN3, 0.0]])  # softmax(z/2): (1/2, 1/2), (3/4, 1/4)
    teacher = torch.tensor([[0.0, 2 * LN3], [0.0, 0.0]])  # softmax(t/2): (1/4, 3/4), (1/2, 1/2)
    rows = [kl([0.25, 0.75], [0.5, 0.5]), kl([0.5, 0.5], [0.75, 0.25])]
    expected = t**2 * sum(rows) / 2  # T² · batch-mean KL(teacher ‖ student)
    assert kd_loss(student, teacher, t).item() == pytest.approx(expected, rel=1e-6)
    # KLDivLoss's reduction 'mean' (the official code) divides by N·K: K = 2 times smaller
    official = F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1), reduction="mean") * t**2
    assert official.item() == pytest.approx(expected / 2, rel=1e-6)


def test_kd_loss_gradient_reaches_only_the_student():
    t = 2.0
    student = torch.tensor([[0.0, 0.0], [2 * LN3, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 2 * LN3], [0.0, 0.0]], requires_grad=True)
    kd_loss(student, teacher, t).backward()
    assert teacher.grad is None
    # d/dz T²·KL = T·(softmax(z/T) − softmax(t/T)) / N
    expected = torch.tensor([[0.5 - 0.25, 0.5 - 0.75], [0.75 - 0.5, 0.25 - 0.5]]) * t / 2
    torch.testing.assert_close(student.grad, expected)


def test_kd_loss_is_float32_and_zero_for_identical_logits():
    z = torch.randn(5, 7).to(torch.bfloat16)
    loss = kd_loss(z, z.clone(), 3.0)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_label_smoothing_spreads_epsilon_over_k_minus_1():
    torch.testing.assert_close(
        smoothed_targets(torch.tensor([2]), num_classes=4, smoothing=0.3), torch.tensor([[0.1, 0.1, 0.7, 0.1]])
    )
    logits = torch.tensor([[0.0, math.log(2), math.log(3), math.log(4)], [0.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([2, 0])  # softmax row 0 = (1, 2, 3, 4) / 10; row 1 uniform
    row0 = -(0.1 * math.log(0.1) + 0.1 * math.log(0.2) + 0.7 * math.log(0.3) + 0.1 * math.log(0.4))
    row1 = math.log(4)
    loss = label_smoothing_loss(logits, target, 0.3)
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # PyTorch's label_smoothing spreads ε over all K classes (0.775 / 0.075): a different loss
    torch_ls = F.cross_entropy(logits, target, label_smoothing=0.3)
    assert abs(torch_ls.item() - loss.item()) > 1e-3
    torch.testing.assert_close(label_smoothing_loss(logits, target, 0.0), F.cross_entropy(logits, target))


def test_tfkd_reg_loss_golden():
    a, t = 0.9, 0.5
    target = torch.tensor([0])
    torch.testing.assert_close(virtual_teacher(target, 3, a), torch.tensor([[0.9, 0.05, 0.05]]))
    e = [math.exp(0.9 / t), math.exp(0.05 / t), math.exp(0.05 / t)]
    p_t = [v / sum(e) for v in e]  # softmax(p^d / T)
    logits = torch.tensor([[0.0, math.log(2), 0.0]])
    loss = tfkd_reg_loss(logits, target, temperature=t, correct_prob=a)
    assert loss.item() == pytest.approx(kl(p_t, [0.25, 0.5, 0.25]), rel=1e-6)  # student at τ = 1
    r2 = math.sqrt(2)
    soft_student = [1 / (2 + r2), r2 / (2 + r2), 1 / (2 + r2)]  # softmax(z / 2)
    loss2 = tfkd_reg_loss(logits, target, temperature=t, correct_prob=a, student_temperature=2.0)
    assert loss2.item() == pytest.approx(kl(p_t, soft_student), rel=1e-6)


def test_tfkd_reg_default_teacher_is_nearly_uniform_at_t20():
    # a = 0.99, T = 20, K = 10: p_T(y) = e^(0.99/20) / (e^(0.99/20) + 9·e^(0.01/9/20))
    logits = torch.zeros(1, 10, requires_grad=True)
    loss = tfkd_reg_loss(logits, torch.tensor([3]), temperature=20.0)
    on, off = math.exp(0.99 / 20), math.exp(0.01 / 9 / 20)
    p_y, p_other = on / (on + 9 * off), off / (on + 9 * off)
    expected = p_y * math.log(p_y * 10) + 9 * p_other * math.log(p_other * 10)
    assert loss.item() == pytest.approx(expected, rel=1e-3)  # a KL of ~1e-4 from float32 log-probabilities
    loss.backward()
    assert logits.grad[0, 3] < 0  # pushes the labelled class up, slightly


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0.0), "temperature must be > 0"),
        (lambda: kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), 1.0), "differ in shape"),
        (lambda: label_smoothing_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 1.0), "epsilon"),
        (lambda: tfkd_reg_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 20.0, 1.5), "correct_prob"),
        (lambda: tfkd_reg_loss(torch.zeros(2), torch.zeros(2, dtype=torch.long), 20.0), "shape"),
    ],
)
def test_bad_input_is_a_one_line_error(call, message):
    with pytest.raises(LeannetError, match=message) as info:
        call()
    assert "\n" not in str(info.value)
