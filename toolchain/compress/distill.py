"""Distillation beyond the teacher's outputs, in one training step of the toolchain's own (``Trainer``):

- relations against the float teacher: RKD distance and angle (Park et al. 2019, "Relational Knowledge
  Distillation": the distances and the angles between the samples' embeddings at one layer, each normalized, a
  Huber loss between the student's and the teacher's) and FSP (Yim et al. 2017, "A Gift from Knowledge
  Distillation": the Gram matrix of two layers' feature maps, the student's mapped to the teacher's channels by
  trained 1x1 adapters, a mean squared error);
- online: deep mutual learning (Zhang et al. 2018): two or more copies of the student, each trained on the labels
  and on the others' softened outputs; no teacher; the first copy is kept;
- self: deep supervision (Zhang et al. 2019, "Be Your Own Teacher"): auxiliary heads (global pooling and a softmax
  classifier) on earlier layers learn from the network's own output; the heads are dropped after training.

Every term is reported per epoch (``history``: ``loss_<term>``). The student's layers are found through tfmot's
wrappers (``find_layer``), so pruning and QAT steps can distil the same way.
"""

from __future__ import annotations

import logging

import numpy as np

from toolchain.compress.common import Teacher, find_layer
from toolchain.config.recipe import Distill, Relation
from toolchain.errors import CompressionError
from toolchain.models.compat import keras, tf

log = logging.getLogger(__name__)
EPS = 1e-7


# --- the loss terms (tensors in, a scalar out) -----------------------------------------------------------------


def pool(x):
    """A layer's output as one embedding per sample: feature maps averaged over their spatial axes."""
    t = tf()
    x = t.convert_to_tensor(x)
    return t.reduce_mean(x, axis=list(range(1, len(x.shape) - 1))) if len(x.shape) > 2 else x


def _huber(a, b):
    t = tf()
    d = t.abs(a - b)
    return t.reduce_mean(t.where(d < 1.0, 0.5 * d * d, d - 0.5))


def _distances(e):
    """Pairwise Euclidean distances, divided by their mean over the distinct pairs."""
    t = tf()
    sq = t.reduce_sum(e * e, axis=1)
    d = t.sqrt(t.maximum(sq[:, None] + sq[None, :] - 2.0 * t.matmul(e, e, transpose_b=True), EPS))
    off = 1.0 - t.eye(t.shape(e)[0])
    d = d * off
    return d / (t.reduce_sum(d) / t.maximum(t.reduce_sum(off), 1.0) + EPS)


def rkd_distance(student, teacher):
    """RKD's distance term: the samples' normalized pairwise distances, student against teacher (Huber)."""
    return _huber(_distances(pool(student)), _distances(pool(teacher)))


def _angles(e):
    """cos of the angle at j between samples i and k, for every (i, j, k)."""
    t = tf()
    diff = e[None, :, :] - e[:, None, :]  # [j, i] = e_i - e_j
    unit = diff / (t.norm(diff, axis=-1, keepdims=True) + EPS)
    return t.matmul(unit, unit, transpose_b=True)  # [j, i, k]


def rkd_angle(student, teacher):
    """RKD's angle term: the angles the samples' embeddings make in triples, student against teacher (Huber)."""
    return _huber(_angles(pool(student)), _angles(pool(teacher)))


def fsp(a, b):
    """The FSP matrix of two feature maps of one spatial size: sum over positions of a's channels times b's,
    divided by the positions: (batch, channels of a, channels of b)."""
    t = tf()
    a, b = t.convert_to_tensor(a), t.convert_to_tensor(b)
    if len(a.shape) == 2:
        a, b = a[:, None, :], b[:, None, :]
    a = t.reshape(a, [t.shape(a)[0], -1, a.shape[-1]])
    b = t.reshape(b, [t.shape(b)[0], -1, b.shape[-1]])
    return t.matmul(a, b, transpose_a=True) / t.cast(t.shape(a)[1], a.dtype)


def fsp_loss(student_matrix, teacher_matrix):
    t = tf()
    return t.reduce_mean(t.square(student_matrix - teacher_matrix))


def _soft(p, temperature: float):
    t = tf()
    return t.nn.softmax(t.math.log(t.clip_by_value(p, EPS, 1.0)) / temperature, axis=-1)


def kd(p_student, p_teacher, temperature: float):
    """T^2 * KL(softened teacher || softened student), averaged over the batch (the teacher as given: a peer or
    the network's own output is passed through stop_gradient by the caller)."""
    t = tf()
    ps, pt = _soft(p_student, temperature), _soft(p_teacher, temperature)
    kl = t.reduce_sum(pt * (t.math.log(t.clip_by_value(pt, EPS, 1.0)) - t.math.log(t.clip_by_value(ps, EPS, 1.0))), -1)
    return temperature**2 * t.reduce_mean(kl)


def ce(labels, p):
    t = tf()
    return t.reduce_mean(keras().losses.sparse_categorical_crossentropy(labels, t.clip_by_value(p, EPS, 1.0)))


# --- the teacher's side, computed once over the training split -------------------------------------------------


def teacher_layers(d: Distill) -> list[str]:
    """The teacher layers a distillation reads (feature pairs and relations)."""
    layers = [p.teacher for p in d.features]
    for r in d.relations:
        layers += list(r.teacher or r.student)
    return layers


def relation_targets(teacher: Teacher, relations: list[Relation]) -> list[np.ndarray]:
    """Per relation, what the student's batch is compared with: the teacher's pooled embeddings (RKD) or its
    per-sample FSP matrices (computed here once, in chunks)."""
    out = []
    for r in relations:
        names = list(r.teacher or r.student)
        maps = [teacher.features[n] for n in names]
        if r.kind == "fsp":
            a, b = maps
            if a.shape[1:-1] != b.shape[1:-1]:
                raise CompressionError(
                    f"distill.relations fsp: the teacher's {names[0]!r} {tuple(a.shape[1:])} and {names[1]!r} "
                    f"{tuple(b.shape[1:])} differ in spatial size: name two layers of one stage"
                )
            out.append(np.concatenate([fsp(a[i : i + 128], b[i : i + 128]).numpy() for i in range(0, len(a), 128)]))
        else:
            out.append(pool(maps[0]).numpy())
    return out


# --- the training step -----------------------------------------------------------------------------------------


def _tap(model, names: list[str]):
    """``model``'s output and the outputs of the layers ``names`` (tfmot wrappers found), as one model."""
    outs = [find_layer(model, n).output for n in names]
    return keras().Model(model.inputs, [model.output, *outs])


def _adapter(name: str, cin: int, cout: int):
    """A 1x1 map from the student's channels to the teacher's (None when they match)."""
    if cin == cout:
        return None
    return keras().layers.Dense(cout, use_bias=False, name=name)


class Plan:
    """What one training step computes for a ``Distill``: the layers each student taps, the heads, the adapters."""

    def __init__(self, d: Distill, student, teacher: Teacher | None, classes: int):
        k = keras()
        self.d, self.classes = d, classes
        self.features = [(p.student, p.teacher) for p in d.features]
        self.relations = d.relations
        taps = [s for s, _ in self.features]
        for r in self.relations:
            taps += list(r.student)
        taps += list(d.heads)
        self.taps = list(dict.fromkeys(taps))
        for name in self.taps:
            try:
                find_layer(student, name)
            except CompressionError:
                raise CompressionError(f"distill: the student has no layer {name!r}") from None
        shape = {n: tuple(find_layer(student, n).output.shape[1:]) for n in self.taps}
        self.adapters = {}
        for i, (s, t) in enumerate(self.features):
            want = teacher.features[t].shape[1:]
            if tuple(shape[s][:-1]) != tuple(want[:-1]):
                raise CompressionError(
                    f"distill.features: student {s!r} gives {shape[s]}, teacher {t!r} gives {tuple(want)}: only the "
                    "channel count may differ"
                )
            self.adapters[f"feature_{i}"] = _adapter(f"adapter_feature_{i}", shape[s][-1], want[-1])
        for i, r in enumerate(self.relations):
            if r.kind == "fsp":
                for j, (s, t) in enumerate(zip(r.student, r.teacher or r.student, strict=True)):
                    want = teacher.features[t].shape[-1]
                    self.adapters[f"fsp_{i}_{j}"] = _adapter(f"adapter_fsp_{i}_{j}", shape[s][-1], want)
        self.heads = [
            k.Sequential(
                [
                    k.layers.GlobalAveragePooling2D() if len(shape[h]) == 3 else k.layers.Flatten(),
                    k.layers.Dense(classes, activation="softmax"),
                ],  # fmt: skip
                name=f"aux_head_{i}",
            )
            for i, h in enumerate(d.heads)
        ]
        # built now, for their inputs' shapes: their variables exist before the first (traced) step
        for key, a in self.adapters.items():
            if a is not None:
                s = self.features[int(key.split("_")[1])][0] if key.startswith("feature") else None
                if s is None:
                    i, j = map(int, key.split("_")[1:])
                    s = self.relations[i].student[j]
                a.build((None, *shape[s]))
        for h, head in zip(d.heads, self.heads, strict=True):
            head.build((None, *shape[h]))

    def terms(self, labels, outs, targets) -> dict:
        """The loss terms (name -> (weight, value)) of one batch: ``outs`` per student its (probs, {tap: output}),
        ``targets`` the teacher's soft targets, feature maps and relation targets of the batch."""
        t, d = tf(), self.d
        p0, taps0 = outs[0]
        a = d.alpha
        terms = {"hard": (1.0 - (a if (d.mode != "self" and targets.get("soft") is not None) else 0.0), ce(labels, p0))}
        if d.mode == "offline" and targets.get("soft") is not None:
            terms["response"] = (a, kd(p0, targets["soft"], d.temperature))
        for i, (s, _) in enumerate(self.features):
            x = taps0[s]
            if self.adapters[f"feature_{i}"] is not None:
                x = self.adapters[f"feature_{i}"](x)
            terms[f"feature_{i}"] = (d.feature_weight, t.reduce_mean(t.square(x - targets[f"feature_{i}"])))
        for i, r in enumerate(self.relations):
            if r.kind == "fsp":
                maps = []
                for j, s in enumerate(r.student):
                    x, adapter = taps0[s], self.adapters[f"fsp_{i}_{j}"]
                    maps.append(adapter(x) if adapter is not None else x)
                terms[f"fsp_{i}"] = (r.weight, fsp_loss(fsp(*maps), targets[f"relation_{i}"]))
            else:
                fn = rkd_distance if r.kind == "rkd_distance" else rkd_angle
                terms[f"{r.kind}_{i}"] = (r.weight, fn(taps0[r.student[0]], targets[f"relation_{i}"]))
        if d.mode == "online":  # each student: its labels and the mean of its peers' softened outputs
            for s, (p, _) in enumerate(outs):
                peers = [t.stop_gradient(q) for j, (q, _) in enumerate(outs) if j != s]
                if s:
                    terms[f"hard_{s}"] = (1.0 - a, ce(labels, p))
                terms[f"mutual_{s}"] = (a, sum(kd(p, q, d.temperature) for q in peers) / len(peers))
            terms["hard"] = (1.0 - a, terms["hard"][1])
        if d.mode == "self":  # each auxiliary head: the labels and the network's own output
            own = t.stop_gradient(p0)
            for i, (h, head) in enumerate(zip(d.heads, self.heads, strict=True)):
                q = head(taps0[h])
                terms[f"head_{i}"] = (d.head_weight, (1.0 - a) * ce(labels, q) + a * kd(q, own, d.temperature))
        return terms


def build_trainer(students: list, plan: Plan):
    """A Keras model whose ``fit`` runs the plan's step over the students (the first is the one kept); its layers
    include the students', so tfmot's callbacks find their wrappers."""
    k, t = keras(), tf()
    taps = [_tap(s, plan.taps) for s in students]

    class Trainer(k.Model):
        def __init__(self):
            super().__init__(name="distill_trainer")
            self.nets, self.students = taps, students
            self.extra = [a for a in plan.adapters.values() if a is not None] + plan.heads
            self.trackers: dict = {}
            self.accuracy = k.metrics.SparseCategoricalAccuracy(name="accuracy")

        def call(self, x, training=False):
            return self._outs(x, training)[0][0]

        def _outs(self, x, training):
            out = []
            for net in self.nets:
                res = net(x, training=training)
                probs, *maps = res if isinstance(res, list | tuple) else [res]  # no taps: the output alone
                out.append((probs, dict(zip(plan.taps, maps, strict=True))))
            return out

        def train_step(self, data):
            x, y = data
            labels = y["labels"]
            with t.GradientTape() as tape:
                outs = self._outs(x, training=True)
                terms = plan.terms(labels, outs, y)
                total = t.add_n([w * v for w, v in terms.values()])
            variables = self.trainable_variables
            grads = tape.gradient(total, variables)
            self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables, strict=True) if g is not None])
            for name, (_, v) in {"total": (1.0, total), **terms}.items():
                if name not in self.trackers:
                    self.trackers[name] = k.metrics.Mean(name=f"loss_{name}")
                self.trackers[name].update_state(v)
            self.accuracy.update_state(labels, outs[0][0])
            return {**{f"loss_{n}": m.result() for n, m in self.trackers.items()}, "accuracy": self.accuracy.result()}

        @property
        def metrics(self):
            return [*self.trackers.values(), self.accuracy]

    return Trainer()


def targets_for(plan: Plan, y: np.ndarray, teacher: Teacher | None) -> dict:
    """The per-sample targets ``fit`` slices into batches: labels, the teacher's soft targets, feature maps and
    relation targets."""
    from toolchain.compress.common import soft_targets

    out: dict = {"labels": np.asarray(y)}
    d = plan.d
    if d.mode == "offline" and teacher is not None:
        out["soft"] = soft_targets(teacher.probs, 1.0)  # the teacher's probabilities; softened in the step
        for i, (_, tname) in enumerate(plan.features):
            out[f"feature_{i}"] = teacher.features[tname]
        for i, r in enumerate(relation_targets(teacher, plan.relations)):
            out[f"relation_{i}"] = r
    return out


def perturbed_copies(model, n: int, seed: int) -> list:
    """``n`` copies of the student for deep mutual learning: the same weights plus a little noise (1 % of each
    tensor's spread), so the copies do not stay identical (they start from the same compressed weights)."""
    from toolchain.compress.common import clone

    rng, copies = np.random.default_rng(seed), []
    for _ in range(n):
        c = clone(model)
        c.set_weights(
            [
                w + rng.normal(0, 0.01 * (w.std() or 1.0), w.shape).astype(w.dtype) if w.ndim > 1 else w
                for w in model.get_weights()
            ]  # fmt: skip
        )
        copies.append(c)
    return copies


def check(d: Distill, name: str) -> None:
    """What a distillation cannot be, said before any training (exit 15)."""
    if d.mode == "online" and d.students < 2:
        raise CompressionError(f"{name}: distill.mode online trains students together: students must be 2 or more")
    if d.mode == "self" and not d.heads:
        raise CompressionError(f"{name}: distill.mode self puts auxiliary heads on layers: name them in distill.heads")
    if d.mode != "offline" and (d.features or d.relations):
        raise CompressionError(
            f"{name}: distill.features and distill.relations match the float teacher: they go with mode offline "
            f"(mode {d.mode} has no teacher)"
        )
    if d.mode != "self" and d.heads:
        raise CompressionError(f"{name}: distill.heads go with mode self")


def train(model, spec, x: np.ndarray, y: np.ndarray, teacher: Teacher | None, scope, name: str, callbacks, lr, bar):
    """Fine-tune ``model`` (in place) with the toolchain's own step; returns the history (every term per epoch)."""
    d = spec.distill
    check(d, name)
    k = keras()
    classes = model.output_shape[-1]
    with scope.scope():
        students = [model]
        if d.mode == "online":
            students += perturbed_copies(model, d.students - 1, spec.seed)
        plan = Plan(d, model, teacher, classes)
        trainer = build_trainer(students, plan)
        trainer.compile(k.optimizers.Adam(lr))
    targets = targets_for(plan, y, teacher)
    hist = trainer.fit(
        x, targets, batch_size=spec.batch_size, epochs=spec.epochs, verbose=0, shuffle=True, callbacks=[*callbacks, bar]
    )
    history = {key: [float(v) for v in vals] for key, vals in hist.history.items()}
    history["terms"] = {n: w for n, (w, _) in _weights(plan).items()}
    if plan.adapters:
        history["adapters"] = {n: [a.kernel.shape[0], a.kernel.shape[1]] for n, a in plan.adapters.items() if a}
    return history


def _weights(plan: Plan) -> dict:
    """Each term's weight, as the step uses it (for the report)."""
    d, out = plan.d, {}
    out["hard"] = (1.0 - d.alpha if d.mode == "online" or (d.mode == "offline") else 1.0, None)
    if d.mode == "offline":
        out["response"] = (d.alpha, None)
    for i in range(len(plan.features)):
        out[f"feature_{i}"] = (d.feature_weight, None)
    for i, r in enumerate(plan.relations):
        out[f"{r.kind}_{i}" if r.kind != "fsp" else f"fsp_{i}"] = (r.weight, None)
    if d.mode == "online":
        for s in range(d.students):
            out[f"mutual_{s}"] = (d.alpha, None)
            if s:
                out[f"hard_{s}"] = (1.0 - d.alpha, None)
    for i in range(len(d.heads)):
        out[f"head_{i}"] = (d.head_weight, None)
    return out
