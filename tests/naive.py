"""Plain NumPy reference of docs/model.md, one sample per step, equation by equation.

Independent of the fast code paths: no numba, no GEMM blocks, its own mixture moments, whitening
(by eigendecomposition), order parameters and closed-form ε_g. Only the stream construction
(SeedSequence spawn keys) is shared by definition. It also holds the test suite's one plain
definition of the folds f, the activations g and their derivatives g′ (§2.3: ``fold``, ``g_act``,
``g_prime``), which every test uses as its reference.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

SQRT2 = math.sqrt(2.0)


def gen(entropy, *key):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy, spawn_key=key)))


def fold(u, f):
    """The folding function x = f(u) of docs/model.md §2.3, elementwise; NaN stays NaN."""
    if f == "sign":
        return np.sign(u)
    if f == "erf":
        return erf(np.asarray(u, dtype=np.float64) / SQRT2)
    if f == "linear":
        return np.array(u, dtype=np.float64)
    if f == "relu":
        return np.maximum(u, 0.0)
    if f == "tanh":
        return np.tanh(u)
    raise ValueError(f)


def g_act(z, g):
    """The activation g(z) of docs/model.md §2.3, elementwise; NaN stays NaN."""
    if g == "erf":
        return erf(np.asarray(z, dtype=np.float64) / SQRT2)
    if g == "relu":
        return np.maximum(z, 0.0)
    if g == "linear":
        return np.array(z, dtype=np.float64)
    raise ValueError(g)


def g_prime(z, g):
    """The derivative g'(z) of docs/model.md §2.3 (relu: Θ(z), 0 at 0), elementwise; NaN stays
    NaN."""
    z = np.asarray(z, dtype=np.float64)
    if g == "erf":
        return math.sqrt(2.0 / math.pi) * np.exp(-z * z / 2.0)
    if g == "relu":
        return np.where(np.isnan(z), np.nan, (z > 0).astype(np.float64))
    if g == "linear":
        return np.where(np.isnan(z), np.nan, 1.0)
    raise ValueError(g)


FOLD_COEFFS = {  # (a, b, c_f) for u ~ N(0, 1), docs/model.md §2.4
    "sign": (0.0, math.sqrt(2 / math.pi), 1.0),
    "erf": (0.0, 1 / math.sqrt(math.pi), 1 / 3),
    "linear": (0.0, 1.0, 1.0),
    "relu": (1 / math.sqrt(2 * math.pi), 0.5, 0.5),
    "tanh": (0.0, 0.6057055096, 0.3942944904),
}


def fold_coeffs(f):
    if f == "tanh":  # the table's 10 digits are not enough for 1e-12 comparisons
        from scipy.integrate import quad
        density = lambda u: math.exp(-u * u / 2) / math.sqrt(2 * math.pi)  # noqa: E731
        b = quad(lambda u: u * math.tanh(u) * density(u), -40, 40, epsabs=1e-15, limit=200)[0]
        c_f = quad(lambda u: math.tanh(u) ** 2 * density(u), -40, 40, epsabs=1e-15,
                   limit=200)[0]
        return 0.0, b, c_f
    return FOLD_COEFFS[f]


def i2_matrix(C, g):
    """E[g(z_a) g(z_b)] for all pairs, from the formulas of docs/model.md §5.3–5.4."""
    d = np.diag(C)
    if g == "erf":
        return 2 / np.pi * np.arcsin(C / np.sqrt(np.outer(1 + d, 1 + d)))
    if g == "linear":
        return C.copy()
    out = np.empty_like(C)
    for a in range(C.shape[0]):
        for b in range(C.shape[0]):
            norm = math.sqrt(C[a, a] * C[b, b])
            theta = math.acos(min(1.0, max(-1.0, C[a, b] / norm)))
            out[a, b] = norm / (2 * math.pi) * (math.sin(theta) + (math.pi - theta) * math.cos(theta))
    return out


def psd_root(S, power=0.5):
    """S^power for a symmetric PSD matrix by eigendecomposition; eigenvalues below 1e-12 of
    the largest count as 0 (a singular S keeps its null space exactly)."""
    vals, vecs = np.linalg.eigh(S)
    vals = np.where(vals > 1e-12 * vals.max(), vals, 0.0)
    return vecs @ np.diag(vals ** power) @ vecs.T


def draw_means(rng, cfg):
    """μ (m, D): i.i.d. U[−α, α) entries (vector) or a_i·1 with a = U[−α, α)^m (scalar)."""
    if cfg.means == "scalar":
        return np.outer(rng.uniform(-cfg.alpha, cfg.alpha, cfg.m), np.ones(cfg.D))
    return rng.uniform(-cfg.alpha, cfg.alpha, (cfg.m, cfg.D))


class Latents:
    """Mixture latents with their own moments and whitening (docs/model.md §2.1–2.2), or their
    matched Gaussian c = m_c + S_c^{1/2} z (§10.2)."""

    def __init__(self, cfg, means, p, seed_index=0):
        self.cfg, self.means, self.p, self.seed_index = cfg, means, p, seed_index
        if cfg.latent_data is not None:
            self.data_rows = data_rows(cfg)
            if cfg.latent == "matched_gaussian":
                Z = self.data_rows
                mean = np.zeros(cfg.D) if cfg.standardize in ("population", "whiten") \
                    else Z.mean(0)
                cov = np.eye(cfg.D) if cfg.standardize == "whiten" else np.cov(Z.T, bias=True)
                self.matched_mean, self.matched_root = mean, psd_root(cov)
            return
        D, B = cfg.D, cfg.block_size
        self.mu_bar = p @ means
        self.s = np.sqrt(1 + p @ (means - self.mu_bar) ** 2)
        cov = np.eye(D)
        self.blocks = []
        for b in range(D // B):
            sl = slice(b * B, (b + 1) * B)
            dev = means[:, sl] - self.mu_bar[sl]
            cov[sl, sl] += (dev.T * p) @ dev
            self.blocks.append(cov[sl, sl] - np.eye(B))
        self.cov = cov
        self.whitening = psd_root(cov, -0.5)
        if cfg.latent == "matched_gaussian":
            self.matched_mean, self.matched_root = self.matched_factor()

    def matched_factor(self):
        """(m_c, L) of the standardized latent, as §10.2 gives them: closed forms from this
        class's own moments where they exist (population: L = D_s⁻¹ Σ_c^{1/2}; otherwise the
        symmetric root of S_c); for `sample` without one (quadrature, Monte Carlo) the library's
        law (tested against Monte Carlo in test_matched.py)."""
        cfg, D = self.cfg, self.cfg.D
        kind = cfg.standardize
        if kind == "none":
            return self.mu_bar, psd_root(self.cov)
        if kind == "population":
            return np.zeros(D), psd_root(self.cov) / self.s[:, None]
        if kind == "whiten":
            return np.zeros(D), np.eye(D)
        if cfg.matched_method == "exact":
            return np.zeros(D), psd_root(D / (D - 1) * (np.eye(D) - np.ones((D, D)) / D))
        from fastsgd.matched import matched_law
        from fastsgd.sampling import mixture_moments
        from fastsgd.streams import MATCHED_LAW, MOMENTS
        law = matched_law(mixture_moments(self.means, self.p, cfg.block_size), kind,
                          cfg.matched_method, rng=gen(cfg.seed, self.seed_index, MOMENTS,
                                                      MATCHED_LAW),
                          samples=cfg.moment_samples)
        return law.mean, psd_root(law.covariance())

    def aligned_direction(self):
        """The unit top eigenvector of Σ_c − I (§10.3): per block by eigh, the first block with
        the largest eigenvalue, the sign making the largest-magnitude entry positive."""
        tops = [np.linalg.eigh(block) for block in self.blocks]
        values = np.array([vals[-1] for vals, _ in tops])
        b = int(np.flatnonzero(values >= values.max() * (1 - 1e-9))[0])
        B = self.cfg.block_size
        u = np.zeros(self.cfg.D)
        u[b * B:(b + 1) * B] = tops[b][1][:, -1]
        magnitude = np.abs(u)
        if u[np.flatnonzero(magnitude >= magnitude.max() * (1 - 1e-9))[0]] < 0:
            u = -u
        return u

    def draw(self, rng_latent, rng_labels, rng_rows):
        cfg = self.cfg
        if cfg.latent == "data":   # a row with replacement, J = min(⌊uP⌋, P − 1) (§11.1)
            P = self.data_rows.shape[0]
            return self.data_rows[min(int(rng_rows.random() * P), P - 1)]
        if cfg.latent == "matched_gaussian":
            return self.matched_mean + self.matched_root @ rng_latent.standard_normal(cfg.D)
        D, B, m = cfg.D, cfg.block_size, cfg.m
        z = rng_latent.standard_normal(D)
        if m > 1:
            u = rng_labels.random(D // B)
            labels = np.minimum(np.searchsorted(np.cumsum(self.p), u, side="right"), m - 1)
            mu = self.means[np.repeat(labels, B), np.arange(D)]
        else:
            mu = self.means[0]
        return self.standardize(mu + z)

    def standardize(self, c):
        kind = self.cfg.standardize
        if kind == "sample":
            return (c - c.mean()) / c.std()
        if kind == "population":
            return (c - self.mu_bar) / self.s
        if kind == "whiten":
            return self.whitening @ (c - self.mu_bar)
        return c


def data_rows(cfg):
    """The rows of cfg's data file (.npy or FILE.h5:DATASET) after its standardization by the
    data's own moments (docs/model.md §11.2): sample per row, population per column, whiten by
    the inverse square root of the covariance (1/P throughout)."""
    location = cfg.latent_data
    if ".h5:" in location:
        import h5py
        path, name = location.split(".h5:")
        with h5py.File(path + ".h5", "r") as fh:
            X = np.asarray(fh[name][()], dtype=float)
    else:
        X = np.load(location).astype(float)
    kind = cfg.standardize
    if kind == "sample":
        return (X - X.mean(1)[:, None]) / X.std(1)[:, None]
    if kind == "population":
        return (X - X.mean(0)) / X.std(0)
    if kind == "whiten":
        return (X - X.mean(0)) @ psd_root(np.cov(X.T, bias=True), -0.5)
    return X


def shape(a):
    """Skewness and excess kurtosis of each column (central moments with 1/P)."""
    d = a - a.mean(0)
    var = (d ** 2).mean(0)
    return (d ** 3).mean(0) / var ** 1.5, (d ** 4).mean(0) / var ** 2 - 3


def simulate(cfg, seed_index=0, trace=False, input_mean=None):
    """Run seed index ``seed_index`` of ``cfg``: the records, final weights and, with ``trace``,
    ŷ, λ, w and v after every step. With center_inputs every input has ``input_mean`` (E x, the
    kernel side's value: its formulas are tested in test_input_law.py) subtracted."""
    N, D, K, M = cfg.N, cfg.D, cfg.K, cfg.M
    s = seed_index
    ent = cfg.seed if cfg.sample_seed is None else cfg.sample_seed
    F = gen(cfg.seed, s, 0).standard_normal((N, D))
    Wt = gen(cfg.seed, s, 1).standard_normal((M, D))
    A = np.ones(M)
    r_mix = gen(cfg.seed, s, 2)
    means = draw_means(r_mix, cfg)
    if cfg.weights == "dirichlet":
        p = r_mix.dirichlet(np.ones(cfg.m))
    elif cfg.weights == "uniform":
        p = np.full(cfg.m, 1 / cfg.m)
    else:
        p = np.array(cfg.weights) / np.sum(cfg.weights)
    r_student = gen(cfg.seed, s, 3)
    w = r_student.standard_normal((K, N))
    v = r_student.standard_normal(K) if cfg.train_second_layer else np.ones(K)
    latents = Latents(cfg, means, p, s)
    if cfg.teacher == "aligned":
        Wt[0] = math.sqrt(D) * latents.aligned_direction()
    a, b, c_f = fold_coeffs(cfg.f)
    zeta = c_f - a * a - b * b
    eq = cfg.input_model == "equivalent_gaussian"

    centre = np.zeros(N)
    if cfg.center_inputs:
        assert input_mean is not None, "center_inputs: give the seed's input_mean"
        centre = np.asarray(input_mean)

    def inputs(u, xi):
        return (a + b * u + math.sqrt(zeta) * xi if eq else fold(u, cfg.f)) - centre

    # test set, drawn once: latents (P, D), label uniforms (P, D/B), ξ (P, N)
    r_tl, r_tlab, r_txi = gen(ent, s, 5, 0), gen(ent, s, 5, 1), gen(ent, s, 5, 2)
    r_trows = gen(ent, s, 5, 3)
    Ct = np.stack([latents.draw(r_tl, r_tlab, r_trows) for _ in range(cfg.test_size)])
    Ut = Ct @ F.T / math.sqrt(D)
    Xt = inputs(Ut, r_txi.standard_normal((cfg.test_size, N)) if eq else None)
    nut = Ct @ Wt.T / math.sqrt(D)
    yt = g_act(nut, cfg.g) @ A
    T = Wt @ Wt.T / D

    def record(w, v):
        W = w @ w.T / N
        S = w @ F / math.sqrt(N)
        Sigma = S @ S.T / D
        Q = zeta * W + b * b * Sigma
        R = b / D * S @ Wt.T
        C = np.block([[Q, R], [R.T, T]])
        coef = np.concatenate([v, -A])
        eg = 0.5 * coef @ i2_matrix(C, cfg.g) @ coef if cfg.f != "relu" else np.nan
        lam = Xt @ w.T / math.sqrt(N)
        yhat = g_act(lam, cfg.g) @ v
        lc, nc = lam - lam.mean(0), nut - nut.mean(0)
        P = cfg.test_size
        skew, kurt = shape(lam)
        return {"Q": Q, "R": R, "W": W, "Sigma": Sigma, "v": v.copy(), "eg": eg,
                "eg_mc": 0.5 * np.mean((yhat - yt) ** 2), "empirical/Q": lc.T @ lc / P,
                "empirical/R": lc.T @ nc / P, "empirical/T": nc.T @ nc / P,
                "empirical/lambda_mean": lam.mean(0), "empirical/lambda_skewness": skew,
                "empirical/lambda_kurtosis": kurt, "mean_fields": w @ centre / math.sqrt(N)}

    log_points = (np.geomspace(1, cfg.steps, cfg.records - 1) if cfg.records > 2
                  else np.array([cfg.steps]))  # one point: the last step (docs/model.md §3.4)
    grid = np.unique(np.concatenate([[0], np.rint(log_points)]).astype(np.int64))
    records = {}
    r_lat, r_lab = gen(ent, s, 4, 0), gen(ent, s, 4, 1)
    r_noise, r_xi, r_rows = gen(ent, s, 4, 2), gen(ent, s, 4, 3), gen(ent, s, 4, 4)
    traces = {"yhat": [], "lam": [], "w": [], "v": []}
    grid_steps = set(grid.tolist())
    for mu in range(cfg.steps + 1):
        if mu in grid_steps:
            for key, value in record(w, v).items():
                records.setdefault(key, []).append(value)
        if mu == cfg.steps:
            break
        c = latents.draw(r_lat, r_lab, r_rows)
        u = F @ c / math.sqrt(D)
        x = inputs(u, r_xi.standard_normal(N) if eq else None)
        nu = Wt @ c / math.sqrt(D)
        y = A @ g_act(nu, cfg.g)
        if cfg.sigma > 0:
            y = y + cfg.sigma * r_noise.standard_normal()
        lam = w @ x / math.sqrt(N)
        yhat = v @ g_act(lam, cfg.g)
        delta = y - yhat
        if trace:
            traces["yhat"].append(yhat)
            traces["lam"].append(lam)
        w_new = w + cfg.lr / math.sqrt(N) * np.outer(v * delta * g_prime(lam, cfg.g), x)
        if cfg.train_second_layer:
            v = v + cfg.lr / N * delta * g_act(lam, cfg.g)
        w = w_new
        if trace:
            traces["w"].append(w.copy())
            traces["v"].append(v.copy())
    out = {key: np.array(value) for key, value in records.items()}
    nu_skew, nu_kurt = shape(nut)
    out.update({"step": grid, "final/w": w, "final/v": v, "T": T, "A": A, "F": F,
                "teacher": Wt, "means": means, "weights": p, "empirical/nu_skewness": nu_skew,
                "empirical/nu_kurtosis": nu_kurt})
    if trace:
        out.update({f"trace_{key}": np.array(value) for key, value in traces.items()})
    return out


# ---------------------------------------------------------------- ReLU I4 at high precision
def relu_i4_mp(C, dps: int = 30):
    """E[Θ(z₀)Θ(z₁) relu(z₂) relu(z₃)], z ~ N(0, C), in mpmath arithmetic (``dps`` digits).

    Written from docs/model.md §5.4 on the covariance itself (no standardisation, no merging of
    nearly equal fields): Stein's lemma E[z_a h(z)] = Σ_i C_ai E[∂_i h], conditioning by
    C → C − C_·i C_i·/C_ii, and Plackett's identity integrated in t ∈ [0, 1] along
    I + t(P − I) with mpmath's tanh-sinh quadrature (no substitution). Only identical fields
    (C_ff = C_gg = C_fg) are merged; other exactly degenerate pairs are not supported.
    """
    import mpmath as mp

    with mp.workdps(dps):
        C = [[mp.mpf(float(C[i][j])) for j in range(4)] for i in range(4)]
        mapping = {}  # identical random variables (C_ff = C_gg = C_fg) are one field
        for f in range(4):
            mapping[f] = next((g for g in sorted(set(mapping.values()))
                               if C[f][f] == C[g][g] == C[f][g]), f)
        if any(C[f][f] == 0 for f in range(4)):
            return 0.0
        O = sorted(set(mapping.values()))
        a, b = mapping[2], mapping[3]

        def condition(C, i):
            return [[C[p][q] - C[p][i] * C[i][q] / C[i][i] for q in range(4)] for p in range(4)]

        def corr(C, p, q):
            return C[p][q] / mp.sqrt(C[p][p] * C[q][q])

        def prob(C, O):
            n = len(O)
            if n == 0:
                return mp.mpf(1)
            if n == 1:
                return mp.mpf(1) / 2
            if n == 2:
                return mp.mpf(1) / 4 + mp.asin(corr(C, *O)) / (2 * mp.pi)
            if n == 3:
                p, q, r = O
                return (mp.mpf(1) / 8 + (mp.asin(corr(C, p, q)) + mp.asin(corr(C, p, r))
                                         + mp.asin(corr(C, q, r))) / (4 * mp.pi))
            P = [[corr(C, p, q) for q in O] for p in O]
            total = mp.mpf(1) / 16
            for i in range(4):
                for j in range(i + 1, 4):
                    k, l = [m for m in range(4) if m not in (i, j)]
                    rho = P[i][j]
                    if rho == 0:
                        continue

                    def integrand(t, i=i, j=j, k=k, l=l, rho=rho):
                        M = [[P[p][q] * t if p != q else mp.mpf(1) for q in range(4)]
                             for p in range(4)]
                        M = condition(condition(M, i), j)
                        r = M[k][l] / mp.sqrt(M[k][k] * M[l][l])
                        return (rho / (2 * mp.pi * mp.sqrt(1 - t * t * rho * rho))
                                * (mp.mpf(1) / 4 + mp.asin(r) / (2 * mp.pi)))

                    total += mp.quad(integrand, [0, 1])
            return total

        def phi(C, i):
            return 1 / mp.sqrt(2 * mp.pi * C[i][i])

        def first_moment(C, O, b):  # E[z_b 1_O]
            return sum(C[b][i] * phi(C, i) * prob(condition(C, i), [m for m in O if m != i])
                       for i in O)

        def second_moment(C, O, a, b):  # E[z_a z_b 1_O]
            total = C[a][b] * prob(C, O)
            for i in O:
                if i != b:
                    rest = [m for m in O if m != i]
                    total += C[a][i] * phi(C, i) * first_moment(condition(C, i), rest, b)
            return total

        return float(second_moment(C, O, a, b))


# ---------------------------------------------------------------- i.i.d. inputs (Saad–Solla)
def simulate_iid(N, K, M, lr, g, t_max, n_records, seed):
    """Online SGD on x ~ N(0, I_N), y = Σ_m g(W̃_m·x/√N) (A = 1), student v = 1 fixed, with
    docs/model.md §3.1's update and time t = steps/N. Returns t, Q, R (n_records rows) and T; the
    initial weights are w ~ N(0, 1), W̃ ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(K, N))
    W = rng.normal(size=(M, N))
    v = np.ones(K)
    steps = int(round(t_max * N))
    record_at = np.unique(np.rint(np.geomspace(1, steps, n_records - 1)).astype(int))
    record_at = np.concatenate([[0], record_at])
    t, Q, R = [], [], []
    nxt = 0
    for mu in range(steps + 1):
        if nxt < len(record_at) and mu == record_at[nxt]:
            t.append(mu / N)
            Q.append(w @ w.T / N)
            R.append(w @ W.T / N)
            nxt += 1
        if mu == steps:
            break
        x = rng.normal(size=N)
        lam = w @ x / math.sqrt(N)
        nu = W @ x / math.sqrt(N)
        delta = g_act(nu, g).sum() - v @ g_act(lam, g)
        w = w + lr / math.sqrt(N) * np.outer(v * delta * g_prime(lam, g), x)
    return np.array(t), np.array(Q), np.array(R), W @ W.T / N
