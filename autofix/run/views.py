"""Which augmentation makes each view at a step: the configured one, a curriculum that ramps it up
(trainer.augment_warmup_steps) or swings it along a cosine (augment_cycle_steps), and a weaker second
view (augment.second_view_strength). Each strength is built once and reused."""
from __future__ import annotations

import math

from reference_models.augment import BatchAugment, at_strength

from ..config.schema import TrainerConfig


class ViewSchedule:
    def __init__(self, augment: BatchAugment, trainer_cfg: TrainerConfig):
        self.augment, self.t = augment, trainer_cfg
        self._ramp: tuple[float, BatchAugment] | None = None          # the curriculum's current stage
        self._weak: tuple[BatchAugment, BatchAugment] | None = None   # (first view's, the weaker second's)

    def per_view(self, step: int, n_views: int) -> list[BatchAugment]:
        first = self.at(step)
        return [first] + [self.second_view(first)] * (n_views - 1)

    def at(self, step: int) -> BatchAugment:
        """The configured augmentation, or during the warm-up a weaker one: strength rises in ten stages
        from a tenth to full (at_strength). After it, with augment_cycle_steps, strength swings between
        full and augment_cycle_low along a cosine, in tenths."""
        t = self.t
        warmup = t.augment_warmup_steps
        if step >= warmup:
            if not t.augment_cycle_steps:
                return self.augment
            phase = (step - warmup) % t.augment_cycle_steps / t.augment_cycle_steps
            swing = 1.0 - (1.0 - t.augment_cycle_low) * 0.5 * (1.0 - math.cos(2 * math.pi * phase))
            level = round(swing * 10) / 10
            if level >= 1.0:
                return self.augment
        else:
            level = min(step * 10 // warmup + 1, 10) / 10
        if self._ramp is None or self._ramp[0] != level:
            self._ramp = (level, BatchAugment(at_strength(self.augment.cfg, level)))
        return self._ramp[1]

    def second_view(self, augment: BatchAugment) -> BatchAugment:
        """second_view_strength < 1: the other views are a weaker version of the first (a strong/weak
        pair); built once per augmentation stage."""
        strength = augment.cfg.second_view_strength
        if strength >= 1.0:
            return augment
        if self._weak is None or self._weak[0] is not augment:
            self._weak = (augment, BatchAugment(at_strength(augment.cfg, strength)))
        return self._weak[1]
