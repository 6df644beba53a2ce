"""Pre-aggregated series the operator dashboard reads (docs/dashboard.md): nothing here is
governed state. Every figure is derived from sealed audit events and can be rebuilt from them."""

from django.db import models

# Upper bounds (ms) of the latency histogram's buckets; one more bucket holds everything above the
# last bound. Roughly 1.5x apart, so a percentile read from the buckets is within one bucket's width.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 1500, 2000, 3000, 5000, 7500, 10000, 15000, 30000, 60000,
)  # fmt: skip
BUCKETS = len(LATENCY_BOUNDS_MS) + 1


class Period(models.IntegerChoices):
    MINUTE = 60, "minute"
    HOUR = 3600, "hour"
    # the 7-day window's points: 28 per series instead of 168 hours to sum on every refresh
    SIX_HOURS = 21600, "6 hours"


class CallSeries(models.Model):
    """The gateway calls of one model version in one minute or one hour (UTC, `start` aligned to
    the period): how many, how many failed (outcome failure) or were refused (outcome denied), the
    latency histogram of the answered ones (refusals excluded: they would pull p50 towards zero)
    and the tokens of chat and completion calls. Filled by apps.observability.services.roll_up_calls,
    which adds each sealed event exactly once. `version` 0: no version served the call (refused
    before a route was chosen)."""

    period = models.PositiveIntegerField(choices=Period.choices)
    start = models.DateTimeField()
    model_name = models.CharField(max_length=200)
    version = models.PositiveIntegerField(default=0)
    calls = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    denied = models.BigIntegerField(default=0)
    latency_count = models.BigIntegerField(default=0)
    latency_sum_ms = models.FloatField(default=0.0)
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    # b0 … b27 (added below): the latency histogram, one column per bucket, so that a window's
    # histogram is a SUM in the database rather than a merge of lists in Python.

    class Meta:
        verbose_name = "call series point"
        constraints = [
            models.UniqueConstraint(fields=["period", "start", "model_name", "version"], name="call_series_point"),
        ]
        indexes = [models.Index(fields=["period", "start"], name="call_series_period_start")]

    def __str__(self) -> str:
        return f"{self.model_name} v{self.version} {self.start:%Y-%m-%d %H:%M} ({self.get_period_display()})"

    @property
    def latency_buckets(self) -> list[int]:
        return [getattr(self, name) for name in BUCKET_FIELDS]


BUCKET_FIELDS = tuple(f"b{i}" for i in range(BUCKETS))
for _name, _bound in zip(BUCKET_FIELDS, (*LATENCY_BOUNDS_MS, None), strict=True):
    _help = f"calls answered under {_bound} ms (and at or above the bound before)" if _bound else "calls above the last"
    CallSeries.add_to_class(_name, models.BigIntegerField(default=0, help_text=_help))


class RollupCursor(models.Model):
    """How far a rollup has read the sealed audit log: every event with `sequence` at or below this
    is counted in the series, none above it. One row per rollup (`name`), made by the migration;
    a worker holds it locked while it adds a batch, so two workers never count an event twice."""

    name = models.CharField(max_length=32, primary_key=True)
    sequence = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} rolled up to sequence {self.sequence}"
