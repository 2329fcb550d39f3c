import pytest
import torch

from leannet.errors import LeannetError
from leannet.multitask.adashare import (
    AdaShareNet,
    GatedBasicBlock,
    apply_curriculum,
    executed_params,
    gumbel_policy,
    learnable_blocks,
    policy_tensor,
    random_policy,
    reestimate_task_statistics,
    sample_discrete,
    sharing_loss,
    sharing_weights,
    sparsity_loss,
    task_norms,
)
from leannet.multitask.methods import AdaShareSearch

TASKS = {"segmentation": 5, "depth": 1, "normals": 3}


def tiny_net(seed: int = 0) -> AdaShareNet:
    torch.manual_seed(seed)
    return AdaShareNet(TASKS, widths=(4, 8), blocks=(2, 2), strides=(1, 2), head_dilations=(1,))


def batch(n: int = 4, size: int = 8):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, size, size, generator=g)
    normals = torch.nn.functional.normalize(torch.randn(n, 3, size, size, generator=g), dim=1)
    return x, {"segmentation": torch.randint(0, 5, (n, size, size), generator=g),
               "depth": torch.rand(n, size, size, generator=g) + 1, "normals": normals}


@pytest.mark.parametrize("stride,cin,cout", [(1, 4, 4), (2, 4, 8)])
def test_skipped_block_is_exactly_the_shortcut(stride, cin, cout):
    torch.manual_seed(0)
    block = GatedBasicBlock(cin, cout, stride).eval()
    x = torch.randn(2, cin, 8, 8)
    skip = block(x, torch.tensor([0.0, 1.0]))
    assert torch.equal(skip, block.shortcut(x))
    if stride == 1:
        assert torch.equal(skip, x)
    executed = block(x, torch.tensor([1.0, 0.0]))
    assert torch.allclose(executed, torch.relu(block.shortcut(x) + block.residual(x)))
    assert not torch.allclose(executed, skip)
    # soft: the convex combination of both paths (eq. 1), also with a gradient-carrying u
    u = torch.tensor([0.3, 0.7], requires_grad=True)
    assert torch.allclose(block(x, u), 0.3 * executed + 0.7 * skip, atol=1e-6)


def test_network_with_all_skipped_equals_stem_and_shortcuts():
    net = tiny_net().eval()
    x, _ = batch()
    skip_all = policy_tensor(torch.zeros(3, net.num_blocks, dtype=torch.bool))
    out = net(x, skip_all)
    h = net.stem(x)
    for block in net.blocks:
        h = block.shortcut(h)
    assert torch.allclose(out["depth"], net.heads["depth"](h, x.shape[-2:]))


def test_shared_prefix_forward_matches_per_task_forward():
    net = tiny_net().eval()
    x, _ = batch()
    execute = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 0], [1, 0, 1, 1]], dtype=torch.bool)
    fast = net(x, policy_tensor(execute))                            # discrete: prefix sharing
    slow = net(x, policy_tensor(execute).requires_grad_())          # soft path: one pass per task
    for t in TASKS:
        assert torch.allclose(fast[t], slow[t], atol=1e-5)
    hard = net(x, None)
    full = net(x, policy_tensor(torch.ones(3, 4, dtype=torch.bool)).requires_grad_())
    assert all(torch.allclose(hard[t], full[t], atol=1e-5) for t in TASKS)


def test_gumbel_policy_is_a_distribution_and_sharpens_with_low_tau():
    logits = torch.zeros(3, 4, 2)
    logits[..., 0] = 2.0
    g = torch.Generator().manual_seed(0)
    u = gumbel_policy(logits, tau=5.0, generator=g)
    assert torch.allclose(u.sum(-1), torch.ones(3, 4))
    cold = gumbel_policy(logits, tau=0.05, generator=g)
    assert ((cold.max(-1).values) > 0.99).float().mean() > 0.9
    hard = gumbel_policy(logits.clone().requires_grad_(), tau=1.0, hard=True, generator=g)
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}


def test_curriculum_unlocks_blocks_from_the_last_to_the_first():
    num_blocks, speed = 4, 2
    counts = [learnable_blocks(e, speed, num_blocks) for e in range(10)]
    assert counts == [1, 1, 2, 2, 3, 3, 4, 4, 4, 4]
    u = torch.full((2, num_blocks, 2), 0.5)
    unlocked_order = []
    for e in range(0, 8, speed):
        forced = apply_curriculum(u, learnable_blocks(e, speed, num_blocks))
        free = [l for l in range(num_blocks) if forced[0, l, 0] == 0.5]
        unlocked_order += [l for l in free if l not in unlocked_order]
        for l in range(num_blocks):
            if l not in free:
                assert forced[:, l].tolist() == [[1.0, 0.0]] * 2  # locked blocks are executed
    assert unlocked_order == [3, 2, 1, 0]
    with pytest.raises(LeannetError):
        learnable_blocks(0, 0, 4)


def test_sparsity_and_sharing_losses():
    logits = torch.zeros(2, 4, 2)
    assert torch.isclose(sparsity_loss(logits), torch.log(torch.tensor(2.0)))
    skipping = logits.clone()
    skipping[..., 1] = 3.0
    assert sparsity_loss(skipping) < sparsity_loss(logits)
    # only the unlocked (last) blocks count
    partial = logits.clone()
    partial[:, :3, 1] = 10.0
    assert torch.isclose(sparsity_loss(partial, learnable=1), torch.log(torch.tensor(2.0)))
    # official form: the per-task means are summed (here 2 tasks)
    assert torch.isclose(sparsity_loss(logits, form="official"), 2 * torch.log(torch.tensor(2.0)))
    uneven = logits.clone()
    uneven[0, :, 1] = 2.0  # task 0 leans to skipping
    per_task = -torch.log_softmax(uneven, -1)[..., 1].mean(-1)
    assert torch.isclose(sparsity_loss(uneven, form="official"), per_task.sum())
    assert torch.isclose(sparsity_loss(uneven), per_task.mean())
    with pytest.raises(LeannetError, match="valid forms"):
        sparsity_loss(logits, form="mean")
    assert sharing_loss(logits) == 0
    w = sharing_weights(4)
    assert torch.allclose(w, torch.tensor([1.0, 0.75, 0.5, 0.25]))  # early blocks cost more to split
    early, late = logits.clone(), logits.clone()
    early[0, 0, 0] = 1.0
    late[0, 3, 0] = 1.0
    assert sharing_loss(early) > sharing_loss(late) > 0
    three = torch.zeros(3, 4, 2)
    three[0, 1, 1] = 2.0
    assert torch.isclose(sharing_loss(three), torch.tensor(2 * 0.75 * 2.0))  # two pairs differ


def _snapshot(net):
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def _step(method, optimizer, batch):
    out = method(batch)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    return out


def test_policy_gets_gradients_only_in_policy_epochs_and_weights_only_in_weight_epochs():
    net = tiny_net()
    method = AdaShareSearch(net, 5, warmup_epochs=1, search_epochs=2, init_noise=0.0)
    x, targets = batch()
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    p_opt = method.extra_optimizers()["policy"]
    assert method.extra_optimizers()["policy"] is p_opt  # built once: Lightning checkpoints this one
    method.start_epoch(1)  # the first weight epoch
    before = _snapshot(net)
    out = _step(method, w_opt, (x, targets))
    assert out["optimizer"] == "" and net.policy_logits.grad is None
    assert torch.equal(net.policy_logits, before["policy_logits"])
    assert not torch.equal(net.blocks[0].conv1.weight, before["blocks.0.conv1.weight"])
    # policy epoch: the logits move, no weight receives a gradient or changes (BN buffers may)
    method.start_epoch(2)
    w_opt.zero_grad(set_to_none=True)
    middle = _snapshot(net)
    out = _step(method, p_opt, (x, targets))
    assert out["optimizer"] == "policy" and float(out["sharing"]) >= 0
    assert net.policy_logits.grad is not None and net.policy_logits.grad.abs().sum() > 0
    assert not torch.equal(net.policy_logits, middle["policy_logits"])
    for name, p in net.named_parameters():
        if name != "policy_logits":
            assert p.grad is None, name
            assert torch.equal(p, middle[name]), name


def test_search_schedule_halves_tau_and_curriculum():
    method = AdaShareSearch(tiny_net(), 5, warmup_epochs=2, search_epochs=3, tau=5.0, tau_final=0.1)
    assert method.epochs == 8
    assert [method.phase_of(e) for e in range(8)] == [("warmup", 0), ("warmup", 0), ("weights", 0), ("policy", 0),
                                                     ("weights", 1), ("policy", 1), ("weights", 2), ("policy", 2)]
    weights_half, policy_half = method.train_subset(0, 101), method.train_subset(3, 101)
    assert len(weights_half) == 50 and len(policy_half) == 51
    assert set(weights_half.tolist()).isdisjoint(policy_half.tolist())
    assert torch.equal(method.train_subset(4, 101), weights_half)  # the same halves every search epoch
    assert [round(method.tau(s), 6) for s in range(3)] == [5.0, round(5 * 0.02 ** 0.5, 6), 0.1]
    decaying = AdaShareSearch(tiny_net(), 5, tau=5.0, tau_final=None, tau_decay=0.5)
    assert decaying.tau(2) == pytest.approx(1.25)
    method.start_epoch(3)
    assert method.learnable() == 1 and method.eval_policy()[:, :3, 0].eq(1).all()


def test_search_defaults_are_the_official_codes():
    defaults = AdaShareSearch.__init__.__kwdefaults__
    assert defaults["sharing_form"] == defaults["sparsity_form"] == "official" and defaults["tau_final"] <= 0.05


def test_skip_layer_keeps_the_first_blocks_out_of_the_policy():
    method = AdaShareSearch(tiny_net(), 5, warmup_epochs=0, search_epochs=8, skip_layer=2)
    method.start_epoch(2 * 7)  # the last search epoch: the curriculum has unlocked every block
    assert method.learnable() == 2
    u = method.sampled_policy()
    assert torch.equal(u[:, :2], policy_tensor(torch.ones(3, 2, dtype=torch.bool)))
    with pytest.raises(LeannetError, match="skip_layer"):
        AdaShareSearch(tiny_net(), 5, skip_layer=4)


def test_curriculum_in_policy_epochs_freezes_locked_block_logits():
    net = tiny_net()
    method = AdaShareSearch(net, 5, warmup_epochs=0, search_epochs=4, sharing=0.0, init_noise=0.0)
    method.start_epoch(1)  # search epoch 0: the last block alone is learnable
    _step(method, method.extra_optimizers()["policy"], batch())
    grad = net.policy_logits.grad
    assert grad[:, :3].abs().sum() == 0 and grad[:, 3].abs().sum() > 0


def test_init_noise_breaks_the_tie_between_tasks():
    assert torch.equal(AdaShareSearch(tiny_net(), 5, init_noise=0.0).model.policy_logits, torch.zeros(3, 4, 2))
    noisy = AdaShareSearch(tiny_net(), 5, init_noise=0.01).model.policy_logits
    assert 0 < noisy.abs().max() < 0.1 and not torch.equal(noisy[0], noisy[1])


def test_official_sharing_form_weights_late_blocks_on_the_execute_column():
    logits = torch.zeros(2, 4, 2)
    logits[0, 0] = torch.tensor([1.0, 1.0])
    assert torch.isclose(sharing_loss(logits, "paper"), torch.tensor(2.0))       # (4-0)/4 · (1 + 1)
    assert torch.isclose(sharing_loss(logits, "official"), torch.tensor(0.25))   # (0+1)/4 · 1, execute column
    late = torch.zeros(2, 4, 2)
    late[0, 3, 1] = 1.0  # the skip column: ignored by the official form
    assert sharing_loss(late, "official") == 0 and torch.isclose(sharing_loss(late, "paper"), torch.tensor(0.25))
    with pytest.raises(LeannetError, match="valid forms: paper, official"):
        sharing_loss(logits, "both")


def test_discrete_policies_and_params():
    net = tiny_net()
    g = torch.Generator().manual_seed(0)
    logits = torch.zeros(3, 4, 2)
    logits[0, :, 0] = 20.0   # task 0 always executes
    logits[1, :, 1] = 20.0   # task 1 always skips
    execute = sample_discrete(logits, g)
    assert execute[0].all() and not execute[1].any()
    rand = random_policy([1, 2, 4], 4, g)
    assert rand.sum(1).tolist() == [1, 2, 4]
    full = executed_params(net)
    assert full == sum(p.numel() for p in net.parameters()) - net.policy_logits.numel()
    none = executed_params(net, torch.zeros(3, 4, dtype=torch.bool))
    assert none < full
    with pytest.raises(LeannetError):
        net(torch.randn(1, 3, 8, 8), torch.zeros(2, 4, 2))


# ---- per-task BatchNorm statistics --------------------------------------------------------------------------

def _stats(net: AdaShareNet, block: int, task: int) -> torch.Tensor:
    return net.blocks[block].bn1.task_running_mean[task]


def test_each_task_keeps_the_running_statistics_of_its_own_path():
    """Tasks 0 and 1 take different paths before block 2 (task 1 skips block 1): block 2's statistics must be
    those of each task's own input, not one average over both."""
    net = tiny_net()
    execute = torch.ones(3, 4, dtype=torch.bool)
    execute[1, 1] = False
    u = policy_tensor(execute)
    x, _ = batch(8)
    net.train()
    net(x, u)
    with torch.no_grad():  # each task's input to block 2, along its own path, with the stats before the update
        reference = tiny_net()
        stem = reference.stem.train()(x)
        h1 = reference.blocks[0].for_tasks((0, 1, 2))(stem)
        paths = {0: reference.blocks[1].for_tasks((0, 2))(h1), 1: reference.blocks[1].shortcut(h1)}
        for task, h in paths.items():
            inside = reference.blocks[2].conv1(h)
            expected = 0.9 * 0 + 0.1 * inside.mean((0, 2, 3))
            torch.testing.assert_close(_stats(net, 2, task), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(_stats(net, 2, 0), _stats(net, 2, 1))
    torch.testing.assert_close(_stats(net, 2, 0), _stats(net, 2, 2))  # same path, same statistics
    assert torch.equal(_stats(net, 1, 1), torch.zeros_like(_stats(net, 1, 1)))  # never ran block 1


def test_eval_uses_each_tasks_own_statistics():
    """After training along different paths, evaluating each task alone (single-task network with that task's
    statistics) gives the same prediction as the multi-task network."""
    net = tiny_net()
    execute = torch.ones(3, 4, dtype=torch.bool)
    execute[1, 1] = False
    u = policy_tensor(execute)
    net.train()
    for seed in range(3):
        net(torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(seed)), u)
    net.eval()
    x, _ = batch(4)
    together = net(x, u)
    for t, name in enumerate(net.task_names):  # one task at a time, its own path
        h = net.stem(x)
        for l, block in enumerate(net.blocks):
            block.for_tasks((t,))
            h = block(h) if execute[t, l] else block.shortcut(h)
        torch.testing.assert_close(together[name], net.heads[name](h, x.shape[-2:]))


def test_hard_sharing_is_unchanged_by_per_task_statistics():
    """With every task on every block, training and evaluation equal one plain BatchNorm per layer."""
    net = tiny_net()
    plain = tiny_net()
    for block in plain.blocks:  # the same network with the wrapped norms unwrapped
        for name in ("bn1", "bn2"):
            setattr(block, name, getattr(block, name).norm)
        if isinstance(block.shortcut, torch.nn.Sequential):
            block.shortcut[1] = block.shortcut[1].norm
    for layer in (m for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        layer._non_persistent_buffers_set.clear()
    net.train(), plain.train()
    for seed in range(3):
        x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
        a, b = net(x), plain(x)
        for t in TASKS:
            assert torch.equal(a[t], b[t])
    net.eval(), plain.eval()
    x, _ = batch(4)
    a, b = net(x), plain(x)
    for t in TASKS:
        assert torch.equal(a[t], b[t])
    for k in range(3):
        assert torch.equal(net.blocks[3].bn2.task_running_var[k], plain.blocks[3].bn2.running_var)


def test_soft_policies_update_each_tasks_statistics_separately():
    net = tiny_net()
    net.train()
    u = gumbel_policy(net.policy_logits.detach().requires_grad_(True), tau=1.0)
    net(torch.randn(4, 3, 8, 8), u)
    first = net.blocks[0].bn1.task_running_mean  # the same input (the stem) for every task
    assert torch.equal(first[0], first[1]) and first.abs().sum() > 0
    rows = net.blocks[1].bn1.task_running_mean  # after block 0's task-specific soft mixture
    assert not torch.equal(rows[0], rows[1]) and not torch.equal(rows[1], rows[2])


def test_state_dict_carries_the_task_order():
    net = tiny_net()
    other = AdaShareNet({"depth": 1, "segmentation": 5, "normals": 3}, widths=(4, 8), blocks=(2, 2), strides=(1, 2),
                        head_dilations=(1,))
    with pytest.raises(LeannetError, match="order"):
        other.load_state_dict(net.state_dict(), strict=False)
    tiny_net(1).load_state_dict(net.state_dict())


def test_gumbel_policy_refuses_a_zero_temperature():
    with pytest.raises(LeannetError, match="tau"):
        gumbel_policy(torch.zeros(2, 3, 2), tau=0)


def test_stochastic_depth_drops_blocks_in_training_and_scales_them_at_test():
    """Huang et al. 2016: block l is dropped with p_l = drop_rate·(l+1)/L in training; at test every block runs
    with its residual branch scaled by the survival probability 1 − p_l."""
    from leannet.multitask.methods import MultiTask

    net = tiny_net()
    method = MultiTask(net, 0, drop_rate=0.5)
    p = method.drop_probabilities(net.num_blocks)
    assert p.tolist() == pytest.approx([0.125, 0.25, 0.375, 0.5])
    assert [b.residual_scale for b in net.blocks] == pytest.approx([0.875, 0.75, 0.625, 0.5])
    torch.manual_seed(0)
    executed = torch.stack([method.train_policy()[0, :, 0] for _ in range(2000)])  # same for every task
    assert executed.mean(0).tolist() == pytest.approx((1 - p).tolist(), abs=0.04)
    block = net.blocks[3].eval()
    x = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        expected = torch.relu(block.shortcut(x) + 0.5 * block.residual(x))
        assert torch.allclose(block(x), expected)
        block.train()
        assert torch.allclose(block(x), torch.relu(block.shortcut(x) + block.residual(x)))
    assert all(b.residual_scale == 1.0 for b in tiny_net().blocks)  # no stochastic depth: plain blocks


@pytest.mark.parametrize("drop_rate", [0.0, 0.5])
def test_reestimated_statistics_are_those_of_the_network_evaluation_runs(drop_rate):
    """After re-estimation on X, every norm's running mean (row of the task whose path reaches it) equals the
    mean of its input when the net is evaluated on X: along each task's path, and with stochastic depth's
    residuals scaled as the test scales them."""
    from leannet.multitask.methods import MultiTask

    net = tiny_net()
    MultiTask(net, 0, drop_rate=drop_rate)
    execute = torch.ones(3, 4, dtype=torch.bool)
    execute[1, 2] = False  # depth skips block 2: blocks 2 and 3 see two different inputs
    u = policy_tensor(execute)
    xs = [torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(0))]  # one batch: eval normalises as
    assert reestimate_task_statistics(net, u, iter(xs)) == 1                       # training did, up to n/(n-1)
    assert not net.training
    seen: dict[int, list[torch.Tensor]] = {}
    hooks = [layer.register_forward_hook(lambda m, a, out, i=i: seen.setdefault(i, []).append(
        (m.tasks, a[0].mean((0, 2, 3))))) for i, layer in enumerate(task_norms(net))]
    with torch.no_grad():
        for x in xs:
            net(x, u)
    for hook in hooks:
        hook.remove()
    checked = 0
    for i, layer in enumerate(task_norms(net)):
        by_tasks: dict[tuple[int, ...], list[torch.Tensor]] = {}
        for tasks, mean in seen[i]:
            by_tasks.setdefault(tasks, []).append(mean)
        for tasks, means in by_tasks.items():
            for t in tasks:
                torch.testing.assert_close(layer.task_running_mean[t], torch.stack(means).mean(0),
                                           rtol=1e-3, atol=1e-3)
                checked += 1
    assert checked == 3 * len(task_norms(net)) - 2  # every row but depth's in the block it skips


def test_partition_is_cached_until_a_statistics_row_changes(monkeypatch):
    """Grouping tasks by equal statistics reads rows back from the device: done once, then reused until a row
    is written (training, re-estimation, loading)."""
    from leannet.multitask.adashare import TaskNorm

    net = tiny_net().eval()
    calls = []
    original = TaskNorm.same_statistics
    monkeypatch.setattr(TaskNorm, "same_statistics", lambda self, a, b: calls.append(1) or original(self, a, b))
    x, _ = batch(4)
    with torch.no_grad():
        first = net(x)
        counted = len(calls)
        again = net(x)
    assert counted > 0 and len(calls) == counted  # the second forward compared nothing
    for t in TASKS:
        assert torch.equal(first[t], again[t])
    block = net.blocks[1]
    assert block.partition((0, 1, 2)) == [(0, 1, 2)]
    block.bn1.task_running_mean[1].add_(1.0)  # depth's statistics now differ here
    assert block.partition((0, 1, 2)) == [(0, 2), (1,)]
    net.load_state_dict(tiny_net().state_dict())  # rows copied back: equal again
    assert block.partition((0, 1, 2)) == [(0, 1, 2)]
