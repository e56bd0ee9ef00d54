"""Secure aggregation (mllib.privacy.secure_aggregation) against its threat model.

Issue #28's three flaws, each with a test that fails on the old single-object protocol:
no silent overflow (the encoding is sized from a declared bound), fresh masks every round,
and parties that hold only their own secrets (the server only the messages it received).
"""
import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import mllib
from mllib.privacy import secure_aggregation as sa

STEPS = ("advertise keys", "share keys", "masked input", "unmask")


def fixed_point_sum(encoding, X, among):
    return encoding.decode(sum(encoding.encode(X[i]) for i in among) % encoding.modulus)


# --- the protocol sums exactly --------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 6), d=st.integers(1, 12), seed=st.integers(0, 2**16), data=st.data())
def test_the_sum_is_the_exact_fixed_point_sum_of_u3_with_dropouts_at_any_step(n, d, seed, data):
    t = data.draw(st.integers(n // 2 + 1, n))
    dropped = data.draw(st.dictionaries(st.integers(0, n - 1), st.sampled_from(STEPS), max_size=n - t))
    gen = torch.Generator().manual_seed(seed)
    X = (torch.rand(n, d, generator=gen, dtype=torch.float64) * 2 - 1) * 10
    protocol = sa.SecureAggregation(n, t, d, bound=10.0, gen=gen)
    total = protocol.run_round(X, dropped)
    u3 = [i for i in range(n) if STEPS.index(dropped.get(i, "unmask")) >= STEPS.index("unmask")]
    assert torch.equal(total, fixed_point_sum(protocol.encoding, X, u3))
    assert (total - X[u3].sum(0)).abs().max() <= len(u3) * protocol.encoding.step / 2


@pytest.mark.parametrize("step", STEPS)
def test_fewer_than_threshold_clients_at_any_step_stop_the_round_with_a_clear_error(step):
    protocol = sa.SecureAggregation(5, 3, 4, bound=1.0, gen=mllib.generator(0))
    with pytest.raises(ValueError, match="fewer than threshold=3"):
        protocol.run_round(torch.zeros(5, 4), {0: step, 1: step, 2: step})
    assert protocol.run_round(torch.ones(5, 4)).tolist() == [5.0] * 4  # the next round starts afresh


# --- 1. no overflow, by construction --------------------------------------------------------------
def test_the_issues_overflow_example_now_sums_exactly():
    """Three inputs of 20000 summed to -5536.0 with 16 fraction bits modulo 2^32; sized from the
    bound, 15 fraction bits leave room for the sum."""
    protocol = sa.SecureAggregation(3, 2, 1, bound=20000.0)
    assert protocol.encoding.fraction_bits == 15 and protocol.encoding.modulus_bits == 32
    assert protocol.run_round(torch.full((3, 1), 20000.0)).item() == 60000.0
    with pytest.raises(ValueError, match=r"wraps modulo 2\^32; pass modulus_bits >= 33"):
        sa.FixedPoint(20000.0, 3, modulus_bits=32, fraction_bits=16)  # the old encoding


def test_a_sum_exactly_at_the_limit_decodes_exactly_and_one_step_past_raises_before_masking():
    bound = (2**32 - 1) // 3  # n B = 2^32 - 1 = 2^(k-1) - 1 for k = 33: the very edge of the signed range
    protocol = sa.SecureAggregation(3, 2, 2, bound=float(bound), fraction_bits=0)
    assert protocol.encoding.modulus_bits == 33
    X = torch.tensor([[bound, -bound]] * 3, dtype=torch.float64)
    assert protocol.run_round(X).tolist() == [2**32 - 1, -(2**32 - 1)]
    protocol.advertise_keys()
    protocol.share_keys()
    past = rf"input outside the declared bound: max \|x_c\| = {bound + 1}.0 > bound {bound}.0"
    with pytest.raises(ValueError, match=past):
        protocol.masked_inputs(X + torch.tensor([1.0, 0.0], dtype=torch.float64))  # one step (2^-0) past
    assert not [m for m in protocol.server.received if isinstance(m, sa.MaskedInput) and m.round == 1]


@settings(max_examples=60, deadline=None)
@given(bound=st.floats(1e-3, 1e9), n=st.integers(1, 1000), bits=st.integers(16, 54))
def test_the_fraction_bits_are_the_most_that_fit_and_sums_at_the_bound_decode_exactly(bound, n, bits):
    try:
        encoding = sa.FixedPoint(bound, n, modulus_bits=bits)
    except ValueError as error:  # too large for this modulus even without fraction bits
        assert f"pass modulus_bits >= {sa.FixedPoint(bound, n, fraction_bits=0).modulus_bits}" in str(error)
        return
    f = encoding.fraction_bits
    q_max = math.floor(bound * 2**f + 0.5)  # the largest |round(x 2^f)| for |x| <= bound
    assert n * q_max <= 2 ** (bits - 1) - 1
    assert f == 62 or n * math.floor(bound * 2 ** (f + 1) + 0.5) > 2 ** (bits - 1) - 1  # one more bit would wrap
    x = torch.tensor([bound, -bound], dtype=torch.float64)
    residues = [int(q) * n % encoding.modulus for q in encoding.encode(x)]  # the sum of n copies, in Python ints
    total = encoding.decode(torch.tensor(residues))
    assert total.tolist() == [n * q_max * encoding.step, -n * q_max * encoding.step]


def test_an_l2_bound_is_a_clipping_norm():
    encoding = sa.FixedPoint(1.0, 4, norm="l2")
    x = torch.tensor([0.5, -0.75], dtype=torch.float64)  # norm 0.90
    assert encoding.decode(encoding.encode(x) * 4 % encoding.modulus).tolist() == [2.0, -3.0]
    with pytest.raises(ValueError, match=r"\|\|x\|\|_2 = 1.00\d* > bound 1;"):
        encoding.encode(torch.tensor([0.6, 0.8001], dtype=torch.float64))


@pytest.mark.parametrize("kwargs, match", [
    (dict(bound=float("nan"), n_clients=3), "bound must be a finite number > 0, got nan"),
    (dict(bound=0.0, n_clients=3), "bound must be a finite number > 0, got 0.0"),
    (dict(bound=1.0, n_clients=0), "n_clients must be an integer >= 1, got 0"),
    (dict(bound=1.0, n_clients=3, norm="l1"), "norm must be one of"),
    (dict(bound=1.0, n_clients=3, modulus_bits=64), r"modulus_bits must be an integer in \[2, 54\]"),
    (dict(bound=1e12, n_clients=3), r"wraps modulo 2\^32 even with 0 fraction bits; pass modulus_bits >= 43"),
    (dict(bound=1e15, n_clients=30, fraction_bits=10), r"needs a modulus beyond 2\^54; pass fewer fraction_bits"),
])  # fmt: skip
def test_bad_encodings_raise_a_clear_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sa.FixedPoint(**kwargs)


def test_non_finite_inputs_raise():
    with pytest.raises(ValueError, match="x must be finite, got nan"):
        sa.FixedPoint(1.0, 2).encode(torch.tensor([0.0, float("nan")]))


# --- 2. fresh masks every round -------------------------------------------------------------------
def difference_of_two_rounds(x1, x2, gen):
    """What a curious server computes from client 0's masked vectors of two rounds: y1 - y2 mod 2^k / 2^k."""
    protocol = sa.SecureAggregation(3, 2, len(x1), bound=1.0, gen=gen)
    X1, X2 = torch.zeros(3, len(x1)), torch.zeros(3, len(x1))
    X1[0], X2[0] = x1, x2
    y = []
    for X in (X1, X2):
        protocol.advertise_keys()
        protocol.share_keys()
        y.append(protocol.masked_inputs(X)[0].y)
        protocol.unmask()
    return ((y[0] - y[1]) % protocol.encoding.modulus).double() / protocol.encoding.modulus


def test_two_rounds_masked_vectors_reveal_nothing_about_x1_minus_x2():
    """Over 100 fresh protocols (16 coordinates each), y1 - y2 is as uniform when x1 = x2 as when
    x1 - x2 = 2 (the bound's whole range): a two-sample KS test cannot tell them apart. With the
    masks of round 1 reused in round 2 (the old flaw), y1 - y2 = x1 - x2 exactly."""
    gen, d = mllib.generator(0), 16
    same = torch.cat([difference_of_two_rounds(torch.zeros(d), torch.zeros(d), gen) for _ in range(100)])
    apart = torch.cat([difference_of_two_rounds(torch.ones(d), -torch.ones(d), gen) for _ in range(100)])
    assert stats.ks_2samp(same.numpy(), apart.numpy()).pvalue > 0.01
    assert stats.kstest(apart.numpy(), "uniform").pvalue > 0.01
    encoding = sa.FixedPoint(1.0, 3)
    reused = ((encoding.encode(torch.ones(d)) - encoding.encode(-torch.ones(d))) % encoding.modulus).double()
    reused = (reused / encoding.modulus).repeat(100)  # what the server saw over 100 protocols under the old flaw
    assert stats.ks_2samp(same.numpy(), reused.numpy()).pvalue < 1e-6  # the test has power


def test_every_round_has_fresh_keys_and_seeds_and_binds_the_round_into_the_derivation():
    protocol = sa.SecureAggregation(3, 2, 5, bound=1.0, gen=mllib.generator(0))
    keys = [protocol.advertise_keys()[0]]
    protocol.share_keys(), protocol.masked_inputs(torch.zeros(3, 5)), protocol.unmask()
    keys.append(protocol.advertise_keys()[0])
    assert keys[0].mask_public != keys[1].mask_public and keys[0].cipher_public != keys[1].cipher_public
    own, other = sa.private_key(mllib.generator(1)), sa.private_key(mllib.generator(2)).public_key()
    assert sa.agree(own, other, sa.pair_info("mask", 0, 1, 2)) != sa.agree(own, other, sa.pair_info("mask", 1, 1, 2))
    assert sa.pair_info("mask", 3, 1, 2) == sa.pair_info("mask", 3, 2, 1)


def test_masking_twice_in_one_round_raises_and_rounds_must_increase():
    protocol = sa.SecureAggregation(3, 2, 4, bound=1.0, gen=mllib.generator(0))
    protocol.advertise_keys()
    shares = protocol.server.route_shares([c.share_keys(protocol.in_flight[c.index]) for c in protocol.clients])
    client = protocol.clients[0]
    client.masked_input(torch.zeros(4), shares[0])
    with pytest.raises(ValueError, match="already masked its input in round 0"):
        client.masked_input(torch.ones(4), shares[0])
    with pytest.raises(ValueError, match="rounds must increase"):
        client.advertise_keys(0)
    with pytest.raises(ValueError, match="must start one new round after round 0"):
        protocol.server.collect_keys([sa.AdvertiseKeys(0, 1, b"c" * 32, b"s" * 32)])


# --- 3. parties hold only their own secrets -------------------------------------------------------
def secrets_of(clients) -> list[bytes]:
    s = [c._secrets for c in clients]
    return [k for r in s for k in (r.cipher_key.private_bytes_raw(), r.mask_key.private_bytes_raw(), r.self_seed)]


def test_the_server_holds_only_messages_and_no_client_secret():
    protocol = sa.SecureAggregation(4, 3, 6, bound=1.0, gen=mllib.generator(0))
    protocol.advertise_keys(), protocol.share_keys(), protocol.masked_inputs(torch.zeros(4, 6))
    secrets = secrets_of(protocol.clients)
    view = pickle.dumps(protocol.server)  # a client object (its X25519 keys) would not pickle
    assert not [s for s in secrets if s in view]
    assert all(isinstance(m, sa.Message) for m in protocol.server.received)
    assert [type(m).__name__ for m in protocol.server.received] == (
        ["AdvertiseKeys"] * 4 + ["EncryptedShares"] * 4 + ["MaskedInput"] * 4
    )
    protocol.unmask()
    assert len(protocol.server.received) == 16 and len(protocol.server.sent) == 12
    assert all(c.state_dict()["stage"] == "idle" for c in protocol.clients)  # the round's secrets are gone


def test_a_masked_vector_is_indistinguishable_from_uniform_even_for_a_zero_input():
    protocol = sa.SecureAggregation(3, 2, 20000, bound=1.0, gen=mllib.generator(0))
    protocol.advertise_keys(), protocol.share_keys()
    y = protocol.masked_inputs(torch.zeros(3, 20000))[0].y
    assert stats.kstest((y.double() / 2**32).numpy(), "uniform").pvalue > 0.01
    counts = np.bincount((y % 256).numpy(), minlength=256)  # low byte
    assert stats.chisquare(counts).pvalue > 0.01


def in_unmask_step(n=5, t=3):
    protocol = sa.SecureAggregation(n, t, 4, bound=1.0, gen=mllib.generator(0))
    protocol.advertise_keys(), protocol.share_keys()
    protocol.masked_inputs(torch.rand(n, 4, generator=mllib.generator(1)))
    return protocol


def test_the_lying_server_gets_nothing_when_it_names_a_client_both_survivor_and_dropped():
    protocol = in_unmask_step()
    lie = sa.UnmaskRequest(0, survivors=(0, 1, 2, 3, 4), dropped=(3,))
    for client in protocol.clients:
        with pytest.raises(sa.RefusedRequest, match=r"names clients \[3\] both as survivors and as dropped"):
            client.unmask(lie)
    assert protocol.unmask().tolist() == pytest.approx(torch.rand(5, 4, generator=mllib.generator(1)).sum(0).tolist())


def test_the_lying_server_cannot_collect_both_secrets_in_two_requests_either():
    """It claims client 3 dropped (and gets s_3^SK from 0, 1, 2, 4), then that it survived: the
    clients that answered refuse a second answer; client 3's lone share of b_3 is below t."""
    protocol = in_unmask_step()
    first = sa.UnmaskRequest(0, survivors=(0, 1, 2, 4), dropped=(3,))
    key_shares = [protocol.clients[i].unmask(first).key_shares[3] for i in (0, 1, 2, 4)]
    second = sa.UnmaskRequest(0, survivors=(0, 1, 2, 3, 4), dropped=())
    seed_shares = []
    for client in protocol.clients:
        try:
            seed_shares.append(client.unmask(second).seed_shares[3])
        except sa.RefusedRequest as refusal:
            assert "already answered the unmask request of round 0" in str(refusal)
    assert len(sa.reconstruct(key_shares, 3)) == 32 and len(seed_shares) == 1
    with pytest.raises(ValueError, match="at least threshold=3 shares"):
        sa.reconstruct(seed_shares, 3)


@pytest.mark.parametrize("request_, match", [
    (sa.UnmaskRequest(0, (0, 1, 2, 4), (3,)), "names this client as dropped"),  # sent to client 3
    (sa.UnmaskRequest(0, (1, 2, 3, 4), (0,)), "names this client as dropped"),
    (sa.UnmaskRequest(0, (0, 1, 2), (3,)), r"the round's clients are \[0, 1, 2, 3, 4\]"),
    (sa.UnmaskRequest(0, (0, 3), (1, 2, 4)), "only 2 survivors, fewer than t=3"),
    (sa.UnmaskRequest(1, (0, 1, 2, 3, 4), ()), "for round 1, but its round is 0"),
])  # fmt: skip
def test_an_honest_client_refuses_an_inconsistent_unmask_request(request_, match):
    client = in_unmask_step().clients[3 if request_.dropped == (3,) and len(request_.survivors) == 4 else 0]
    with pytest.raises(sa.RefusedRequest, match=match):
        client.unmask(request_)


def test_t_minus_one_colluding_clients_hold_too_few_shares_of_either_secret():
    protocol = in_unmask_step(n=5, t=3)
    colluders = protocol.clients[:2]
    for which in (0, 1):  # s_4^SK, b_4
        with pytest.raises(ValueError, match="at least threshold=3 shares"):
            sa.reconstruct([c._secrets.held[4][which] for c in colluders], 3)


def test_a_client_refuses_shares_the_server_moved_to_another_recipient():
    protocol = sa.SecureAggregation(3, 2, 2, bound=1.0, gen=mllib.generator(0))
    protocol.advertise_keys(), protocol.share_keys()
    moved = sa.ForwardedShares(0, 0, {1: protocol.in_flight[2].ciphertexts[1]})  # sealed for client 2
    with pytest.raises(sa.RefusedRequest, match="do not authenticate"):
        protocol.clients[0].masked_input(torch.zeros(2), moved)


def test_the_servers_view_prints_one_line_per_message():
    protocol = sa.SecureAggregation(3, 2, 4, bound=1.0, gen=mllib.generator(0))
    protocol.run_round(torch.zeros(3, 4), {2: "unmask"})
    lines = protocol.server.view(round=0).splitlines()
    assert len(lines) == 11 and lines[0].startswith("round 0 AdvertiseKeys   client 0 -> server: c^PK ")
    assert lines[-1] == ("round 0 UnmaskResponse  client 1 -> server: shares of b for clients [0, 1, 2], "
                         "of s^SK for clients []")


@pytest.mark.parametrize("n, t, match", [(5, 6, "threshold"), (5, 2, "threshold"), (1, 1, "^n must be an integer >= 2")])
def test_bad_thresholds_raise(n, t, match):
    with pytest.raises(ValueError, match=match):
        sa.SecureAggregation(n, t, 3, bound=1.0)


def test_an_encoding_sized_for_fewer_clients_is_rejected():
    with pytest.raises(ValueError, match="encoding must be sized for n_clients >= 5"):
        sa.SecAggServer(5, 3, sa.FixedPoint(1.0, 4), 3)


# --- primitives -----------------------------------------------------------------------------------
def test_shamir_needs_threshold_shares():
    shares = sa.share(b"\x07" * 32, 5, 3, np.random.default_rng(0))
    assert sa.reconstruct(shares[2:], 3) == b"\x07" * 32
    assert sa.reconstruct([shares[0], shares[3], shares[4]], 3) == b"\x07" * 32
    with pytest.raises(ValueError, match="at least threshold=3 shares"):
        sa.reconstruct(shares[:2], 3)
    with pytest.raises(ValueError, match="do not reconstruct"):
        sa.reconstruct(shares[:2], 2)


@pytest.mark.parametrize("bits", [32, 33, 54])
def test_pairwise_masks_cancel_and_both_sides_agree_on_the_seed(bits):
    keys = [sa.private_key(mllib.generator(i)) for i in range(4)]
    seeds = {i: {j: sa.agree(keys[i], keys[j].public_key()) for j in range(4) if j != i} for i in range(4)}
    assert seeds[1][2] == seeds[2][1]
    assert int(sum(sa.pairwise_mask(i, seeds[i], 8, bits) for i in range(4)).remainder(2**bits).abs().sum()) == 0


def test_prg_is_chacha20_and_seed_dependent_and_covers_the_modulus():
    assert torch.equal(sa.prg(b"\x01" * 32, 5), sa.prg(b"\x01" * 32, 5))
    assert not torch.equal(sa.prg(b"\x01" * 32, 5), sa.prg(b"\x02" * 32, 5))
    wide = sa.prg(b"\x03" * 32, 20000, 54)
    assert 0 <= int(wide.min()) and int(wide.max()) < 2**54
    assert stats.kstest((wide.double() / 2**54).numpy(), "uniform").pvalue > 0.01
    with pytest.raises(ValueError, match="32 bytes"):
        sa.prg(b"\x01" * 16, 5)


def test_sealed_shares_open_only_for_their_round_sender_and_recipient():
    key = b"\x05" * 32
    sealed = sa.seal(key, 3, 1, 2, 11, 22)
    assert sa.open_sealed(key, 3, 1, 2, sealed) == (11, 22)
    for round, sender, recipient in [(4, 1, 2), (3, 2, 1), (3, 1, 0)]:
        with pytest.raises(ValueError, match="do not authenticate"):
            sa.open_sealed(key, round, sender, recipient, sealed)


def test_protocol_cost_counts_seven_messages_per_client_and_a_ciphertext_per_ordered_pair():
    cost = sa.protocol_cost(5, 10, rounds=1, gen=mllib.generator(0))
    assert (cost["messages"], cost["ciphertexts"]) == (35, 20) and cost["seconds"] > 0


def test_rounds_of_the_protocol_run_on_the_round_engine_with_fresh_keys():
    from mllib import engine

    protocol = sa.SecureAggregation(3, 2, 4, bound=1.0, gen=mllib.generator(0))
    X = torch.rand(3, 4, generator=mllib.generator(1)) * 2 - 1
    history = engine.run(sa.SecAggRounds(protocol, X), 2, metrics={"sum": lambda rounds: rounds.total})
    assert history.rounds == [1, 2] and protocol.round == 1  # the protocol counts its rounds from 0
    for total in history["sum"]:
        torch.testing.assert_close(total, X.double().sum(0), rtol=0, atol=1e-6)
    assert 0 < history.bits[0] < history.bits[1] == 2 * history.bits[0]


def test_secaggplus_cost_is_four_round_trips_per_node_and_a_ciphertext_per_neighbour():
    assert sa.secaggplus_cost(20, 5) == {"clients": 20, "messages": 160, "ciphertexts": 80}  # as benchmarked
    course = sa.protocol_cost(5, 10, rounds=1, gen=mllib.generator(0))
    complete = sa.secaggplus_cost(5, 5)  # every node a neighbour: the complete graph of the course's protocol
    assert complete["ciphertexts"] == course["ciphertexts"]
    assert complete["messages"] == course["messages"] + 5  # the course's first step has no request
    for n, k in [(1, 1), (5, 1), (5, 6), (5, 2.0)]:
        with pytest.raises((TypeError, ValueError), match="^(n_clients|num_shares) must be"):
            sa.secaggplus_cost(n, k)
