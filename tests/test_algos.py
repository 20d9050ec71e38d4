"""Learner maths: hand-computed examples, loop references, masking, clipping and gradient accumulation."""

from __future__ import annotations

import math

import pytest
import torch

from agentrl.learner.algos import (
    ADVANTAGES,
    AGGREGATIONS,
    ALGORITHMS,
    KL,
    LOSSES,
    AdvantageInputs,
    LossInputs,
    dynamic_sampling_mask,
    get_algorithm,
    global_normalisers,
    kl_in_reward,
    masked_mean,
    masked_whiten,
    overlong_penalty,
    token_to_turn_sum,
    turn_to_token,
)

AGG_NAMES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


def t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


def outcome_inputs(rewards, groups, token_mask) -> AdvantageInputs:
    return AdvantageInputs(
        rewards=t(rewards), group_ids=torch.tensor(groups), token_mask=torch.tensor(token_mask)
    )


# ---------------------------------------------------------------- outcome advantages, by hand
# groups: g0 = [1, 0], g1 = [2, 4, 6], g2 = [5] (singleton)
REWARDS = [1.0, 0.0, 2.0, 4.0, 6.0, 5.0]
GROUPS = [7, 7, 3, 3, 3, 9]  # arbitrary, non-contiguous ids
TMASK = [[0, 1, 1], [1, 1, 0], [0, 0, 1], [1, 1, 1], [1, 0, 1], [1, 1, 1]]


def test_grpo_hand_computed():
    # g0: mean .5, unbiased std sqrt((.25+.25)/1) = sqrt(.5) -> +-.5/sqrt(.5) = +-sqrt(.5) = +-0.70710678
    # g1: mean 4, deviations -2, 0, 2, unbiased var 8/2 = 4, std 2 -> -1, 0, 1
    # g2: singleton -> 0
    out = ADVANTAGES.get("grpo")(outcome_inputs(REWARDS, GROUPS, TMASK), eps=0.0)
    per_traj = [0.70710678, -0.70710678, -1.0, 0.0, 1.0, 0.0]
    expected = t([[a * m for m in row] for a, row in zip(per_traj, TMASK, strict=True)])
    torch.testing.assert_close(out.advantages, expected, atol=1e-7, rtol=0)
    assert out.returns is None


def test_grpo_eps_and_constant_group_is_exactly_zero():
    # with eps=1e-6: .5 / (.70710678 + 1e-6) = 0.70710578
    out = ADVANTAGES.get("grpo")(outcome_inputs([1.0, 0.0], [0, 0], [[1], [1]]))
    torch.testing.assert_close(out.advantages[:, 0], t([0.70710578, -0.70710578]), atol=1e-7, rtol=0)
    # 0.1 * 3 / 3 is not exactly 0.1 in float; a constant group must still give exactly 0 (not residual / eps)
    x = AdvantageInputs(
        rewards=torch.tensor([0.1, 0.1, 0.1]), group_ids=torch.tensor([0, 0, 0]), token_mask=torch.ones(3, 2)
    )
    assert ADVANTAGES.get("grpo")(x).advantages.abs().max().item() == 0.0


def test_drgrpo_hand_computed():
    # r - group mean: g0 .5, -.5; g1 -2, 0, 2; singleton 0
    out = ADVANTAGES.get("drgrpo")(outcome_inputs(REWARDS, GROUPS, TMASK))
    per_traj = [0.5, -0.5, -2.0, 0.0, 2.0, 0.0]
    expected = t([[a * m for m in row] for a, row in zip(per_traj, TMASK, strict=True)])
    torch.testing.assert_close(out.advantages, expected)


def test_rloo_hand_computed():
    # g0: 1 - 0 = 1, 0 - 1 = -1;  g1: 2 - (4+6)/2 = -3, 4 - (2+6)/2 = 0, 6 - (2+4)/2 = 3;  singleton: 0
    out = ADVANTAGES.get("rloo")(outcome_inputs(REWARDS, GROUPS, TMASK))
    per_traj = [1.0, -1.0, -3.0, 0.0, 3.0, 0.0]
    expected = t([[a * m for m in row] for a, row in zip(per_traj, TMASK, strict=True)])
    torch.testing.assert_close(out.advantages, expected)


# ---------------------------------------------------------------- outcome advantages vs Python loops
def _loop_group_adv(rewards: list[float], groups: list[int], kind: str, eps: float = 1e-6) -> list[float]:
    out = []
    for i, (r, g) in enumerate(zip(rewards, groups, strict=True)):
        members = [rewards[j] for j in range(len(rewards)) if groups[j] == g]
        n = len(members)
        if n < 2 or max(members) == min(members):
            out.append(0.0)
            continue
        mean = sum(members) / n
        if kind == "grpo":
            std = math.sqrt(sum((m - mean) ** 2 for m in members) / (n - 1))
            out.append((r - mean) / (std + eps))
        elif kind == "drgrpo":
            out.append(r - mean)
        else:  # rloo
            others = [rewards[j] for j in range(len(rewards)) if groups[j] == g and j != i]
            out.append(r - sum(others) / len(others))
    return out


@pytest.mark.parametrize("kind", ["grpo", "drgrpo", "rloo"])
def test_outcome_advantages_match_loop(kind):
    gen = torch.Generator().manual_seed(0)
    b, tlen = 40, 7
    groups = torch.randint(0, 9, (b,), generator=gen)
    rewards = torch.randint(0, 4, (b,), generator=gen).double() / 3  # ties and constant groups happen
    mask = torch.rand(b, tlen, generator=gen) > 0.3
    x = AdvantageInputs(rewards=rewards, group_ids=groups, token_mask=mask)
    got = ADVANTAGES.get(kind)(x).advantages
    ref = _loop_group_adv(rewards.tolist(), groups.tolist(), kind)
    expected = torch.tensor(ref, dtype=torch.float64)[:, None] * mask
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=1e-9)


# ---------------------------------------------------------------- GAE over turns
def gae_inputs(**kw) -> AdvantageInputs:
    # traj 0: 3 turns, tokens [obs, t0, t0, t1, t2, t2]
    # traj 1: 2 turns (third padded), tokens [obs, t0, obs, t1, t1, pad]
    base = dict(
        rewards=t([1.0, 2.0]),
        group_ids=torch.tensor([0, 1]),
        token_mask=torch.tensor([[0, 1, 1, 1, 1, 1], [0, 1, 0, 1, 1, 0]]),
        turn_index=torch.tensor([[-1, 0, 0, 1, 2, 2], [-1, 0, -1, 1, 1, -1]]),
        turn_rewards=t([[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]]),  # 9 is padding garbage
        turn_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]),
        values=t([[0.5, 0.6, 0.8], [1.0, 1.5, 7.0]]),  # 7 is padding garbage
    )
    base.update(kw)
    return AdvantageInputs(**base)


def test_gae_hand_computed():
    # gamma=1, lam=.5.  traj 0: d2 = 1 - .8 = .2, A2 = .2;  d1 = 0 + .8 - .6 = .2, A1 = .2 + .5*.2 = .3;
    #                            d0 = 0 + .6 - .5 = .1, A0 = .1 + .5*.3 = .25.  R = A + V = .75, .9, 1.0
    #                   traj 1: A1 = 2 + 0 - 1.5 = .5;  A0 = 0 + 1.5 - 1 + .5*.5 = .75.  R = 1.75, 2.0
    out = ADVANTAGES.get("gae")(gae_inputs(), gamma=1.0, lam=0.5, whiten=False)
    torch.testing.assert_close(out.advantages, t([[0, 0.25, 0.25, 0.3, 0.2, 0.2], [0, 0.75, 0, 0.5, 0.5, 0]]))
    torch.testing.assert_close(out.returns, t([[0, 0.75, 0.75, 0.9, 1.0, 1.0], [0, 1.75, 0, 2.0, 2.0, 0]]))


def test_gae_discount_and_hole_in_turn_mask():
    # turn 1 is a hole: it is skipped, turn 0 bootstraps from turn 2.  gamma=.5, lam=1:
    # A2 = 1 - .5 = .5;  A0 = 1 + .5*.5 - .5 + .5*1*.5 = 1.0
    x = AdvantageInputs(
        rewards=t([0.0]),
        group_ids=torch.tensor([0]),
        token_mask=torch.tensor([[1, 1, 1]]),
        turn_index=torch.tensor([[0, 1, 2]]),
        turn_rewards=t([[1.0, 100.0, 1.0]]),
        turn_mask=torch.tensor([[1, 0, 1]]),
        values=t([[0.5, 100.0, 0.5]]),
    )
    out = ADVANTAGES.get("gae")(x, gamma=0.5, lam=1.0, whiten=False)
    torch.testing.assert_close(out.advantages, t([[1.0, 0.0, 0.5]]))
    torch.testing.assert_close(out.returns, t([[1.5, 0.0, 1.0]]))


def test_gae_outcome_reward_on_last_turn_and_derived_turn_mask():
    # no turn_rewards / turn_mask: the reward goes on the last turn that has tokens (traj 0: 2, traj 1: 1)
    x = gae_inputs(turn_rewards=None, turn_mask=None, rewards=t([1.0, 2.0]))
    a = ADVANTAGES.get("gae")(x, gamma=1.0, lam=0.5, whiten=False).advantages
    b = ADVANTAGES.get("gae")(gae_inputs(), gamma=1.0, lam=0.5, whiten=False).advantages
    torch.testing.assert_close(a, b)


def test_gae_whiten_over_valid_turns():
    # valid-turn advantages .25, .3, .2, .75, .5 -> whitened over these 5 only (not over tokens)
    out = ADVANTAGES.get("gae")(gae_inputs(), gamma=1.0, lam=0.5, whiten=True)
    raw = torch.tensor([0.25, 0.3, 0.2, 0.75, 0.5], dtype=torch.float64)
    w = (raw - raw.mean()) / raw.std()
    expected = t([[0, w[0], w[0], w[1], w[2], w[2]], [0, w[3], 0, w[4], w[4], 0]])
    torch.testing.assert_close(out.advantages, expected, atol=1e-6, rtol=0)
    # returns come from the un-whitened advantages
    torch.testing.assert_close(out.returns[0, 1], torch.tensor(0.75, dtype=torch.float64))


def _loop_gae(r: list[float], v: list[float], ok: list[bool], gamma: float, lam: float) -> list[float]:
    adv = [0.0] * len(r)
    valid = [k for k in range(len(r)) if ok[k]]
    nxt_v, nxt_a = 0.0, 0.0
    for k in reversed(valid):
        delta = r[k] + gamma * nxt_v - v[k]
        adv[k] = delta + gamma * lam * nxt_a
        nxt_v, nxt_a = v[k], adv[k]
    return adv


def test_gae_matches_loop():
    gen = torch.Generator().manual_seed(1)
    b, k, tpt = 16, 5, 3  # tokens per turn
    r = torch.randn(b, k, generator=gen, dtype=torch.float64)
    v = torch.randn(b, k, generator=gen, dtype=torch.float64)
    ok = torch.rand(b, k, generator=gen) > 0.25
    turn_index = torch.arange(k).repeat_interleave(tpt).expand(b, -1).clone()  # (B, K*tpt)
    token_mask = torch.rand(b, k * tpt, generator=gen) > 0.2
    x = AdvantageInputs(
        rewards=torch.zeros(b, dtype=torch.float64),
        group_ids=torch.arange(b),
        token_mask=token_mask,
        turn_rewards=r,
        turn_mask=ok,
        values=v,
        turn_index=turn_index,
    )
    out = ADVANTAGES.get("gae")(x, gamma=0.9, lam=0.8, whiten=False)
    for i in range(b):
        ref = _loop_gae(r[i].tolist(), v[i].tolist(), ok[i].tolist(), 0.9, 0.8)
        for j in range(k * tpt):
            turn = j // tpt
            want = ref[turn] if token_mask[i, j] and ok[i, turn] else 0.0
            want_ret = ref[turn] + v[i, turn].item() if token_mask[i, j] and ok[i, turn] else 0.0
            assert out.advantages[i, j].item() == pytest.approx(want, abs=1e-9)
            assert out.returns[i, j].item() == pytest.approx(want_ret, abs=1e-9)


def test_gae_needs_values():
    with pytest.raises(ValueError, match="values"):
        ADVANTAGES.get("gae")(gae_inputs(values=None))


def test_turn_token_plumbing():
    turn_index = torch.tensor([[-1, 0, 0, 1, -1]])
    # broadcast: turn 0 -> 10, turn 1 -> 20, obs -> 0
    torch.testing.assert_close(turn_to_token(t([[10.0, 20.0]]), turn_index), t([[0, 10, 10, 20, 0]]))
    # sum back: turn 0 = 2 + 3 = 5, turn 1 = 4 (obs tokens 1 and 5 dropped)
    torch.testing.assert_close(token_to_turn_sum(t([[1.0, 2, 3, 4, 5]]), turn_index, 2), t([[5.0, 4.0]]))


# ---------------------------------------------------------------- KL estimators
def test_kl_estimators_hand_computed():
    logp, ref = t([0.0, -1.0, -0.5]), t([-1.0, 0.0, -0.5])
    torch.testing.assert_close(KL.get("k1")(logp, ref), t([1.0, -1.0, 0.0]))  # logp - ref
    torch.testing.assert_close(KL.get("k2")(logp, ref), t([0.5, 0.5, 0.0]))  # .5 * (+-1)^2
    # d = ref - logp = -1, 1, 0:  e^-1 + 1 - 1 = 0.36787944;  e^1 - 1 - 1 = 0.71828183;  1 - 0 - 1 = 0
    torch.testing.assert_close(KL.get("k3")(logp, ref), t([0.36787944, 0.71828183, 0.0]), atol=1e-8, rtol=0)


def test_k3_nonnegative_and_clamped():
    gen = torch.Generator().manual_seed(2)
    logp, ref = torch.randn(1000, generator=gen) * 5, torch.randn(1000, generator=gen) * 5
    k = KL.get("k3")(logp, ref)
    assert (k >= 0).all() and (k <= 10).all() and torch.isfinite(k).all()
    assert KL.get("k3")(logp, logp).abs().max().item() == 0.0
    assert KL.get("k3")(t([-100.0]), t([0.0])).item() == 10.0  # exp(100) would overflow; clamped as verl


# ---------------------------------------------------------------- aggregations
AV = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
AM = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_aggregations_hand_computed():
    # token-mean: (1+2+4)/3 = 7/3;  seq-mean-token-mean: (1.5 + 4)/2 = 2.75
    # seq-mean-token-sum: (3 + 4)/2 = 3.5
    # seq-mean-token-sum-norm, L=4: 7 / (2 * 4) = .875
    assert AGGREGATIONS.get("token-mean")(AV, AM).item() == pytest.approx(7 / 3)
    assert AGGREGATIONS.get("seq-mean-token-mean")(AV, AM).item() == pytest.approx(2.75)
    assert AGGREGATIONS.get("seq-mean-token-sum")(AV, AM).item() == pytest.approx(3.5)
    assert AGGREGATIONS.get("seq-mean-token-sum-norm")(AV, AM, norm_tokens=4).item() == pytest.approx(0.875)
    # default L is the padded width T=3: 7 / (2 * 3)
    assert AGGREGATIONS.get("seq-mean-token-sum-norm")(AV, AM).item() == pytest.approx(7 / 6)


def test_aggregations_with_global_counts_and_empty_rows():
    # an all-masked row is not a sequence: same results as without it
    v = torch.cat([AV, t([[9.0, 9.0, 9.0]])])
    m = torch.cat([AM, torch.zeros(1, 3, dtype=torch.long)])
    for name in AGG_NAMES:
        assert AGGREGATIONS.get(name)(v, m, norm_tokens=4).item() == pytest.approx(
            AGGREGATIONS.get(name)(AV, AM, norm_tokens=4).item()
        )
    # global counts: token-mean = 7 / 10;  seq-mean-token-mean = 5.5 / 5
    assert AGGREGATIONS.get("token-mean")(AV, AM, global_tokens=10).item() == pytest.approx(0.7)
    assert AGGREGATIONS.get("seq-mean-token-mean")(AV, AM, global_seqs=5).item() == pytest.approx(1.1)
    with pytest.raises(ValueError, match="norm_tokens"):
        AGGREGATIONS.get("seq-mean-token-sum-norm")(AV, AM, global_seqs=2)
    norms = global_normalisers(m)
    assert (norms["global_tokens"], norms["global_seqs"]) == (3.0, 2.0)
    assert norms["row_tokens"].tolist() == [2, 1, 0]


# ---------------------------------------------------------------- clipped policy loss
def clip_inputs(ratios, advs, **kw) -> tuple[LossInputs, torch.Tensor]:
    logp = torch.log(t(ratios))[None].requires_grad_(True)  # old_logp = 0 -> ratio = exp(logp)
    x = LossInputs(
        logp=logp,
        old_logp=torch.zeros_like(logp),
        advantages=t(advs)[None],
        mask=torch.ones_like(logp, dtype=torch.long),
        **kw,
    )
    return x, logp


def test_clip_hand_computed():
    # rho 1.0, A 1:  -1;   rho 1.5, A 1: max(-1.5, -1.2) = -1.2 (clipped)
    # rho 0.5, A -1: max(.5, .8) = .8 (clipped);   rho 1.1, A -1: max(1.1, 1.1) = 1.1
    # token-mean = (-1 - 1.2 + .8 + 1.1) / 4 = -.075;  clipfrac 2/4
    x, _ = clip_inputs([1.0, 1.5, 0.5, 1.1], [1.0, 1.0, -1.0, -1.0])
    out = LOSSES.get("clip")(x, agg="token-mean", clip_low=0.2, clip_high=0.2)
    assert out.loss.item() == pytest.approx(-0.075)
    assert out.metrics["pg_clipfrac"] == pytest.approx(0.5)
    assert out.metrics["ratio_mean"] == pytest.approx(1.025)  # (1 + 1.5 + .5 + 1.1) / 4
    assert out.metrics["ratio_max"] == pytest.approx(1.5)
    # approx_kl = mean of rho - 1 - log rho: (0 + .0945349 + .1931472 + .0046898) / 4 = .0730930
    assert out.metrics["approx_kl"] == pytest.approx(0.0730930, abs=1e-6)


def test_clip_zero_gradient_outside_trust_region():
    # tokens: [A>0, rho 1.3 > 1.2] clipped;  [A<0, rho .7 < .8] clipped;  [A>0, rho .7] and [A<0, rho 1.3] not
    x, logp = clip_inputs([1.3, 0.7, 0.7, 1.3], [1.0, -1.0, 1.0, -1.0])
    LOSSES.get("clip")(x, agg="token-mean").loss.backward()
    g = logp.grad[0]
    assert g[0].item() == 0.0 and g[1].item() == 0.0
    # d/dlogp of -A*rho/4 = -A*rho/4:  -.7/4 = -.175;  +1.3/4 = .325
    assert g[2].item() == pytest.approx(-0.175) and g[3].item() == pytest.approx(0.325)


def test_clip_higher_is_asymmetric():
    # A > 0, rho 1.25: clipped by clip_high .2 (zero grad), inside clip_high .28 (grad -1.25)
    x, logp = clip_inputs([1.25], [1.0])
    LOSSES.get("clip")(x, clip_low=0.2, clip_high=0.2).loss.backward()
    assert logp.grad.item() == 0.0
    x, logp = clip_inputs([1.25], [1.0])
    LOSSES.get("clip")(x, clip_low=0.2, clip_high=0.28).loss.backward()
    assert logp.grad.item() == pytest.approx(-1.25)
    # the low side is unchanged by clip_high: A < 0, rho .75 < .8 is still clipped
    x, logp = clip_inputs([0.75], [-1.0])
    LOSSES.get("clip")(x, clip_low=0.2, clip_high=0.28).loss.backward()
    assert logp.grad.item() == 0.0


def test_dual_clip():
    # A = -1, rho 5: max(5, 1.2) = 5, dual clip min(5, 3) = 3 (zero grad);  A = -1, rho 2: min(2, 3) = 2
    x, logp = clip_inputs([5.0, 2.0], [-1.0, -1.0])
    out = LOSSES.get("clip")(x, clip_c=3.0)
    assert out.loss.item() == pytest.approx((3 + 2) / 2)
    assert out.metrics["pg_clipfrac_lower"] == pytest.approx(0.5)
    out.loss.backward()
    assert logp.grad[0, 0].item() == 0.0 and logp.grad[0, 1].item() == pytest.approx(1.0)  # A*rho/2 = 2/2
    with pytest.raises(ValueError, match="clip_c"):
        LOSSES.get("clip")(x, clip_c=0.5)


def test_clip_kl_and_entropy_terms():
    # rho = 1 everywhere, A = 0 -> pg = 0.  ref_logp - logp = d = -1, 1 -> k3 = .36787944, .71828183
    # loss = .1 * mean(k3) - .01 * mean(H) = .1 * .54308063 - .01 * 1.5 = .03930806
    logp = t([[0.0, -1.0]]).requires_grad_(True)
    x = LossInputs(
        logp=logp,
        old_logp=logp.detach().clone(),
        advantages=t([[0.0, 0.0]]),
        mask=torch.ones(1, 2),
        ref_logp=t([[-1.0, 0.0]]),
        entropy=t([[1.0, 2.0]]),
    )
    out = LOSSES.get("clip")(x, kl_coef=0.1, kl_estimator="k3", entropy_coef=0.01)
    assert out.loss.item() == pytest.approx(0.03930806, abs=1e-7)
    assert out.metrics["kl_ref"] == pytest.approx(0.54308063, abs=1e-7)
    assert out.metrics["entropy"] == pytest.approx(1.5)
    no_ref = LossInputs(logp=logp, old_logp=logp.detach(), advantages=t([[0.0, 0.0]]), mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match="ref_logp"):
        LOSSES.get("clip")(no_ref, kl_coef=0.1)
    with pytest.raises(ValueError, match="entropy"):
        LOSSES.get("clip")(no_ref, entropy_coef=0.1)


def test_value_loss_hand_computed():
    # t0: (1-2)^2 = 1; V_clip = .5 + clip(.5, +-.2) = .7, (.7-2)^2 = 1.69 -> .5 * 1.69 = .845
    # t1: (2-1)^2 = 1; V_clip = 2 -> 1 -> .5.   token-mean = (.845 + .5) / 2 = .6725; clipfrac 1/2
    v = t([[1.0, 2.0]]).requires_grad_(True)
    x = LossInputs(
        logp=torch.zeros(1, 2, dtype=torch.float64),
        old_logp=torch.zeros(1, 2, dtype=torch.float64),
        advantages=torch.zeros(1, 2, dtype=torch.float64),
        mask=torch.ones(1, 2),
        values=v,
        old_values=t([[0.5, 2.0]]),
        returns=t([[2.0, 1.0]]),
    )
    out = LOSSES.get("value")(x, cliprange_value=0.2)
    assert out.loss.item() == pytest.approx(0.6725)
    assert out.metrics["vf_clipfrac"] == pytest.approx(0.5)
    out.loss.backward()
    # t0 uses the clipped (flat) branch -> 0;  t1: d/dV .5*(V-R)^2 / 2 = (2-1)/2 = .5
    torch.testing.assert_close(v.grad, t([[0.0, 0.5]]))
    # unclipped: (.5*1 + .5*1) / 2 = .5
    assert LOSSES.get("value")(x, cliprange_value=None).loss.item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="values"):
        LOSSES.get("value")(LossInputs(x.logp, x.old_logp, x.advantages, x.mask))


# ---------------------------------------------------------------- masking
def random_batch(b=6, tlen=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, tlen, generator=gen) > 0.35
    mask[:, 0] = True  # every row has an action token
    mask[2] = False  # ... except one, a fully masked row
    d = dict(
        logp=-torch.rand(b, tlen, generator=gen, dtype=torch.float64) * 2,
        old_logp=-torch.rand(b, tlen, generator=gen, dtype=torch.float64) * 2,
        advantages=torch.randn(b, tlen, generator=gen, dtype=torch.float64),
        ref_logp=-torch.rand(b, tlen, generator=gen, dtype=torch.float64) * 2,
        entropy=torch.rand(b, tlen, generator=gen, dtype=torch.float64),
        values=torch.randn(b, tlen, generator=gen, dtype=torch.float64),
        old_values=torch.randn(b, tlen, generator=gen, dtype=torch.float64),
        returns=torch.randn(b, tlen, generator=gen, dtype=torch.float64),
    )
    return mask, d


def run_loss(name, mask, d, rows, agg, agg_kwargs, hp):
    """Loss on rows `rows` with fresh leaves; returns (loss, grad of logp or values over the FULL batch)."""
    key = "values" if name == "value" else "logp"
    leaf = d[key].clone().requires_grad_(True)
    fields = {k: (leaf if k == key else v)[rows] for k, v in d.items()}
    out = LOSSES.get(name)(LossInputs(mask=mask[rows], **fields), agg=agg, agg_kwargs=agg_kwargs, **hp)
    out.loss.backward()
    return out.loss.detach(), leaf.grad


LOSS_CASES = [
    ("clip", {"clip_low": 0.2, "clip_high": 0.28, "kl_coef": 0.1, "entropy_coef": 0.01, "clip_c": 3.0}),
    ("value", {"cliprange_value": 0.2}),
]


@pytest.mark.parametrize("name,hp", LOSS_CASES)
@pytest.mark.parametrize("agg", AGG_NAMES)
def test_masked_tokens_change_neither_loss_nor_grad(name, hp, agg):
    mask, d = random_batch()
    kw = {"norm_tokens": 8}
    loss_a, grad_a = run_loss(name, mask, d, slice(None), agg, kw, hp)
    d2 = dict(d)
    junk = torch.randn(mask.shape, dtype=torch.float64) * 30  # huge ratios / values on observation tokens
    for key in ("logp", "values", "entropy", "ref_logp"):
        d2[key] = torch.where(mask, d[key], junk)
    loss_b, grad_b = run_loss(name, mask, d2, slice(None), agg, kw, hp)
    torch.testing.assert_close(loss_a, loss_b, atol=0, rtol=0)
    torch.testing.assert_close(grad_a, grad_b, atol=0, rtol=0)
    assert (grad_b[~mask] == 0).all()


# ---------------------------------------------------------------- gradient accumulation
@pytest.mark.parametrize("name,hp", LOSS_CASES)
@pytest.mark.parametrize("agg", AGG_NAMES)
@pytest.mark.parametrize("split", [(2, 4), (3, 3), (1, 1, 4), (6,)])
def test_grad_accumulation_invariance(name, hp, agg, split):
    mask, d = random_batch()
    full_loss, full_grad = run_loss(name, mask, d, slice(None), agg, {"norm_tokens": 8}, hp)
    norms = {**global_normalisers(mask), "norm_tokens": 8}
    total_loss = torch.zeros((), dtype=torch.float64)
    total_grad = torch.zeros_like(d["logp"])
    start = 0
    for size in split:
        rows = slice(start, start + size)  # row_tokens are per row: a micro-batch of rows takes its slice
        loss, grad = run_loss(name, mask, d, rows, agg, {**norms, "row_tokens": norms["row_tokens"][rows]}, hp)
        total_loss += loss
        total_grad += grad
        start += size
    torch.testing.assert_close(total_loss, full_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(total_grad, full_grad, atol=1e-6, rtol=0)


def test_naive_micro_batch_mean_is_wrong():
    """Why the global normaliser exists: averaging per-micro-batch token-means is not the batch token-mean."""
    mask, d = random_batch()
    full, _ = run_loss("clip", mask, d, slice(None), "token-mean", None, {})
    a, _ = run_loss("clip", mask, d, slice(0, 2), "token-mean", None, {})
    b, _ = run_loss("clip", mask, d, slice(2, 6), "token-mean", None, {})
    assert abs(((a + b) / 2 - full).item()) > 1e-3


# ---------------------------------------------------------------- data helpers
def test_dynamic_sampling_mask():
    # groups: [1, 1] constant; [0, 1] varied; [2, 2] constant; [3] singleton
    keep = dynamic_sampling_mask(t([1, 1, 0, 1, 2, 2, 3]), torch.tensor([0, 0, 1, 1, 2, 2, 3]))
    assert keep.tolist() == [False, False, True, True, False, False, False]
    assert keep.dtype == torch.bool


def test_overlong_penalty_boundaries():
    # max_len 100, buffer 20: <= 80 -> 0;  90 -> (80 - 90)/20 = -.5;  100 -> -1;  > 100 -> -1
    got = overlong_penalty(torch.tensor([50, 80, 81, 90, 100, 120]), max_len=100, buffer=20)
    torch.testing.assert_close(got, torch.tensor([0.0, 0.0, -0.05, -0.5, -1.0, -1.0]))
    hard = overlong_penalty(torch.tensor([100, 101]), max_len=100, buffer=0)
    torch.testing.assert_close(hard, torch.tensor([0.0, -1.0]))
    with pytest.raises(ValueError):
        overlong_penalty(torch.tensor([1]), max_len=10, buffer=20)


def test_kl_in_reward():
    # [1, 0, 5] - .1 * [2, 5, 1] = [.8, -.5, (padding) 0]
    got = kl_in_reward(t([[1.0, 0.0, 5.0]]), t([[2.0, 5.0, 1.0]]), 0.1, turn_mask=torch.tensor([[1, 1, 0]]))
    torch.testing.assert_close(got, t([[0.8, -0.5, 0.0]]))


def test_masked_mean_and_whiten():
    x, m = t([1.0, 2.0, 3.0, 100.0]), torch.tensor([1, 1, 1, 0])
    assert masked_mean(x, m).item() == pytest.approx(2.0)  # (1+2+3)/3
    torch.testing.assert_close(
        masked_mean(t([[1.0, 3.0], [5.0, 7.0]]), torch.tensor([[1, 1], [1, 0]]), dim=1), t([2.0, 5.0])
    )
    # mean 2, unbiased var (1 + 0 + 1)/2 = 1 -> -1, 0, 1; masked entry -> 0
    torch.testing.assert_close(masked_whiten(x, m, eps=0.0), t([-1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(masked_whiten(x, m, shift_mean=False, eps=0.0), t([1.0, 2.0, 3.0, 0.0]))


# ---------------------------------------------------------------- registries and presets
def test_registries_names_and_typos():
    assert ADVANTAGES.names() == ["drgrpo", "gae", "grpo", "rloo"]
    assert LOSSES.names() == ["clip", "value"]
    assert KL.names() == ["k1", "k2", "k3"]
    assert AGGREGATIONS.names() == sorted(AGG_NAMES)
    with pytest.raises(KeyError, match="did you mean 'grpo'"):
        ADVANTAGES.get("grpoo")
    with pytest.raises(KeyError, match="did you mean 'token-mean'"):
        AGGREGATIONS.get("token_mean")
    with pytest.raises(KeyError, match="did you mean 'k3'"):
        KL.get("kk3")
    with pytest.raises(KeyError, match="did you mean 'dapo'"):
        get_algorithm("dapoo")


def test_presets_are_consistent():
    assert set(ALGORITHMS) == {"grpo", "drgrpo", "dapo", "ppo", "rloo"}
    assert ALGORITHMS["dapo"].loss_kwargs["clip_high"] == 0.28 and ALGORITHMS["dapo"].dynamic_sampling
    assert ALGORITHMS["drgrpo"].agg == "seq-mean-token-sum-norm"
    assert ALGORITHMS["ppo"].uses_critic and not ALGORITHMS["grpo"].uses_critic
    with pytest.raises(TypeError):
        ALGORITHMS["grpo"].loss_kwargs["kl_coef"] = 1.0  # read-only
    # overrides merge hparams; swapping a function drops the old function's hparams
    p = get_algorithm("grpo", loss_kwargs={"kl_coef": 0.0})
    assert p.loss_kwargs["kl_coef"] == 0.0 and p.loss_kwargs["clip_low"] == 0.2
    assert ALGORITHMS["grpo"].loss_kwargs["kl_coef"] == 0.04
    assert dict(get_algorithm("grpo", advantage="rloo").advantage_kwargs) == {}
    with pytest.raises(KeyError):
        get_algorithm("grpo", agg="tokenmean")


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_preset_runs_end_to_end(name):
    """The same code path for every algorithm: advantages -> loss (+ value loss) -> backward."""
    algo = get_algorithm(name)
    mask, d = random_batch()
    turn_index = torch.where(mask, torch.arange(5).expand(6, 5) // 2, -1)  # 3 turns of <= 2 tokens
    x = AdvantageInputs(
        rewards=torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5, 0.0], dtype=torch.float64),
        group_ids=torch.tensor([0, 0, 0, 1, 1, 1]),
        token_mask=mask,
        values=torch.randn(6, 3, dtype=torch.float64),
        turn_index=turn_index,
    )
    adv = ADVANTAGES.get(algo.advantage)(x, **algo.advantage_kwargs)
    assert (adv.advantages[~mask] == 0).all()
    logp = d["logp"].clone().requires_grad_(True)
    fields = {**d, "logp": logp, "advantages": adv.advantages}
    if adv.returns is not None:
        fields["returns"] = adv.returns
    norms = {**global_normalisers(mask), "norm_tokens": 8}
    out = LOSSES.get(algo.loss)(
        LossInputs(mask=mask, **fields), agg=algo.agg, agg_kwargs=norms, **algo.loss_kwargs
    )
    loss = out.loss
    if algo.value_loss:
        vout = LOSSES.get(algo.value_loss)(
            LossInputs(mask=mask, **fields), agg=algo.agg, agg_kwargs=norms, **algo.value_kwargs
        )
        loss = loss + algo.vf_coef * vout.loss
    loss.backward()
    assert torch.isfinite(logp.grad).all() and logp.grad.abs().sum() > 0
    assert all(math.isfinite(v) for v in out.metrics.values())
