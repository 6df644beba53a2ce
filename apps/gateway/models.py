from django.db import models


class PolicyEpoch(models.Model):
    """One row (id 1): a counter that every write able to change a gateway decision increments in
    its own transaction (apps/gateway/dataplane/invalidation.py). On SQLite the data plane's policy
    snapshot polls it; on PostgreSQL the same writes send `NOTIFY sovereign_policy` instead, which
    is delivered at commit and takes no row lock (so policy writes do not queue on this row)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    epoch = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "policy epoch"

    def __str__(self) -> str:
        return f"policy epoch {self.epoch}"
