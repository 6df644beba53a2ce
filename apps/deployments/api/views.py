from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.audit.services import Source
from apps.core.errors import NotFound, ServiceError, _
from apps.registry.models import Model, ModelVersion
from apps.registry.selectors import restricted_to_token

from .. import services, tuning
from ..models import BatchingSweep, Deployment, InferenceServer, ReplicaSet, Rollout
from .serializers import (
    BatchingSweepRequestSerializer,
    BatchingSweepSerializer,
    DeploymentRequestSerializer,
    DeploymentSerializer,
    InferenceServerSerializer,
    InferenceServerUpdateSerializer,
    ReplicaSetAutoscaleSerializer,
    ReplicaSetRequestSerializer,
    ReplicaSetScaleSerializer,
    ReplicaSetSerializer,
    RolloutRequestSerializer,
    RolloutSerializer,
    ServerCredentialSerializer,
    SweepApplySerializer,
)


class InferenceServerViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Triton Inference Servers the portal deploys onto: hardware, capacity and labels the
    scheduler places replicas by (docs/fleet.md)."""

    queryset = InferenceServer.objects.all()
    serializer_class = InferenceServerSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    action_perms = {
        "list": "deployments.view_inferenceserver",
        "retrieve": "deployments.view_inferenceserver",
        "create": "deployments.add_inferenceserver",
        "partial_update": "deployments.change_inferenceserver",
        "destroy": "deployments.delete_inferenceserver",
        "credential": "deployments.add_inferenceserver",  # who registers a server sets its credential
    }
    filterset_fields = {"name": ["exact"], "hardware": ["exact"], "state": ["exact"]}

    def initial(self, request, *args, **kwargs):
        """A token restricted to some models changes no server: servers are shared by every model (a
        token for model A must not change what model B is placed on, nor where the gateway reads load)."""
        super().initial(request, *args, **kwargs)
        if request.method not in ("GET", "HEAD", "OPTIONS") and getattr(request.auth, "restricted", False):
            raise ServiceError(
                "token_restricted_to_models",
                _("this token is restricted to some models; servers are shared by every model"),
                403,
            )

    def perform_create(self, serializer):
        data = serializer.validated_data
        serializer.instance = services.register_server(
            name=data["name"],
            http_url=data["http_url"].rstrip("/"),
            grpc_url=data.get("grpc_url", ""),
            hardware=data.get("hardware", "cpu"),
            backends=data.get("backends"),
            credential=data.get("credential"),
            accelerator_model=data.get("accelerator_model", ""),
            memory_mb=data.get("memory_mb", 0),
            labels=data.get("labels"),
            metrics_url=data.get("metrics_url", ""),
            actor=self.request.user,
            source=Source.from_request(self.request),
        )

    @extend_schema(request=InferenceServerUpdateSerializer, responses={200: InferenceServerSerializer})
    def partial_update(self, request, pk=None):
        """Change a server's declared hardware, capacity, labels, backends or metrics URL."""
        form = InferenceServerUpdateSerializer(data=request.data, partial=True)
        form.is_valid(raise_exception=True)
        server = services.update_server(
            server_id=self.get_object().pk,
            actor=request.user,
            source=Source.from_request(request),
            **form.validated_data,
        )
        return Response(InferenceServerSerializer(server).data)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        """Remove a server; refused (409 `server_has_replicas`) while it holds replicas."""
        services.delete_server(server_id=self.get_object().pk, actor=request.user, source=Source.from_request(request))
        return Response(status=204)

    @extend_schema(request=ServerCredentialSerializer, responses={200: InferenceServerSerializer})
    @action(detail=True, methods=["post"])
    def credential(self, request, pk=None):
        """Set, replace (the old one is crypto-shredded) or remove the server's restricted-API credential."""
        form = ServerCredentialSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        server = services.set_server_credential(
            server_id=self.get_object().pk,
            credential=form.validated_data["credential"],
            actor=request.user,
            source=Source.from_request(request),
        )
        return Response(InferenceServerSerializer(server).data)


class DeploymentViewSet(viewsets.ReadOnlyModelViewSet):
    """Deployments hold the desired state; a Celery task reconciles Triton toward it."""

    serializer_class = DeploymentSerializer
    action_perms = {
        "list": "deployments.view_deployment",
        "retrieve": "deployments.view_deployment",
        "create": "deployments.add_deployment",
        "undeploy": "deployments.change_deployment",
        "redeploy": "deployments.change_deployment",
    }
    filterset_fields = {
        "model__name": ["exact"],
        "server": ["exact"],
        "desired_state": ["exact"],
        "observed_state": ["exact"],
    }

    def get_queryset(self):
        deployments = Deployment.objects.select_related("model", "model_version", "server")
        return restricted_to_token(deployments, self.request.auth, via="model").prefetch_related("transitions")

    @extend_schema(request=DeploymentRequestSerializer, responses={202: DeploymentSerializer})
    def create(self, request):
        form = DeploymentRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        self._check_token_reaches(request.auth, data["model_version"])
        dep = services.request_deployment(
            model_version_id=data.pop("model_version"),
            server_id=data.pop("server"),
            batching=data,
            actor=request.user,
            source=Source.from_request(request),
        )
        return Response(DeploymentSerializer(dep).data, status=202)

    @extend_schema(request=None, responses={202: DeploymentSerializer})
    @action(detail=True, methods=["post"])
    def undeploy(self, request, pk=None):
        dep = services.request_undeploy(
            deployment_id=self._id(pk), actor=request.user, source=Source.from_request(request)
        )
        return Response(DeploymentSerializer(dep).data, status=202)

    @extend_schema(request=None, responses={202: DeploymentSerializer})
    @action(detail=True, methods=["post"])
    def redeploy(self, request, pk=None):
        dep = services.request_redeploy(
            deployment_id=self._id(pk), actor=request.user, source=Source.from_request(request)
        )
        return Response(DeploymentSerializer(dep).data, status=202)

    def _id(self, pk) -> int:
        return self.get_object().pk

    @staticmethod
    def _check_token_reaches(token, model_version_id: int) -> None:
        """A model-restricted token deploys only its models: another model's version does not exist."""
        versions = restricted_to_token(ModelVersion.objects.filter(pk=model_version_id), token, via="model")
        if getattr(token, "restricted", False) and not versions.exists():
            raise NotFound(
                "model_version_not_found",
                _("no model version with id %(model_version_id)s") % {"model_version_id": model_version_id},
            )


class RolloutViewSet(viewsets.ReadOnlyModelViewSet):
    """Blue-green and canary rollouts from a model's live version to a new one (docs/rollouts.md)."""

    serializer_class = RolloutSerializer
    action_perms = {
        "list": "deployments.view_rollout",
        "retrieve": "deployments.view_rollout",
        "create": "deployments.add_rollout",
        "promote": "deployments.change_rollout",
        "rollback": "deployments.change_rollout",
        "abort": "deployments.change_rollout",
    }
    filterset_fields = {"model__name": ["exact"], "state": ["exact"], "strategy": ["exact"], "kind": ["exact"]}

    def get_queryset(self):
        rollouts = Rollout.objects.select_related("model", "from_set__model_version", "to_set__model_version")
        return restricted_to_token(rollouts, self.request.auth, via="model")

    @extend_schema(request=RolloutRequestSerializer, responses={201: RolloutSerializer})
    def create(self, request):
        form = RolloutRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        model = restricted_to_token(Model.objects.filter(name=data.pop("model")), request.auth).first()
        if model is None:
            raise NotFound("model_not_found", _("no model of that name"))
        options = {k: data[k] for k in ("steps", "hold_seconds", "slo_max_error_rate", "slo_max_p95_ms", "min_calls")
                   if k in data}  # fmt: skip
        if "batching" in data:  # a batching configuration rollout of one live set (docs/rollouts.md)
            options.pop("steps", None)
            rollout = services.start_config_rollout(
                replica_set_id=data.get("replica_set") or 0,
                batching=data["batching"],
                model_id=model.pk,
                actor=request.user,
                source=Source.from_request(request),
                **options,
            )
            return Response(RolloutSerializer(rollout).data, status=201)
        rollout = services.start_rollout(
            model_id=model.pk,
            to_version_id=data.get("to_version"),
            to_set_id=data.get("to_set"),
            strategy=data["strategy"],
            force=data["force"],
            actor=request.user,
            source=Source.from_request(request),
            **options,
        )
        return Response(RolloutSerializer(rollout).data, status=201)

    @extend_schema(request=None, responses={200: RolloutSerializer})
    @action(detail=True, methods=["post"])
    def promote(self, request, pk=None):
        """Promote at once: the new version takes all traffic, the old set is retired."""
        return self._act(services.promote_now, request)

    @extend_schema(request=None, responses={200: RolloutSerializer})
    @action(detail=True, methods=["post"])
    def rollback(self, request, pk=None):
        """Roll back at once: the old version takes all traffic again, the new set is retired."""
        return self._act(services.rollback_now, request)

    @extend_schema(request=None, responses={200: RolloutSerializer})
    @action(detail=True, methods=["post"])
    def abort(self, request, pk=None):
        """Stop: the old version takes all traffic again, the new replicas are kept at weight 0."""
        return self._act(services.abort_rollout, request)

    def _act(self, service, request):
        rollout = service(rollout_id=self.get_object().pk, actor=request.user, source=Source.from_request(request))
        rollout.refresh_from_db()
        return Response(RolloutSerializer(rollout).data)


class ReplicaSetViewSet(viewsets.ReadOnlyModelViewSet):
    """Replica sets: N replicas of one model version, placed on servers by the scheduler
    (labels, accelerator, backend, memory; spread, then bin-packing). docs/fleet.md."""

    serializer_class = ReplicaSetSerializer
    action_perms = {
        "list": "deployments.view_replicaset",
        "retrieve": "deployments.view_replicaset",
        "create": "deployments.add_replicaset",
        "scale": "deployments.change_replicaset",
        "retire": "deployments.change_replicaset",
        "autoscale": "deployments.change_replicaset",
    }
    filterset_fields = {"model__name": ["exact"], "model_version": ["exact"], "state": ["exact"]}

    def get_queryset(self):
        sets = ReplicaSet.objects.select_related("model", "model_version").prefetch_related("deployments__server")
        return restricted_to_token(sets, self.request.auth, via="model")

    @extend_schema(request=ReplicaSetRequestSerializer, responses={202: ReplicaSetSerializer})
    def create(self, request):
        """Place the replicas (all or nothing: 409 `placement_impossible` with a reason per server)."""
        form = ReplicaSetRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        DeploymentViewSet._check_token_reaches(request.auth, data["model_version"])
        rs = services.request_replica_set(
            model_version_id=data.pop("model_version"),
            replicas=data.pop("replicas"),
            labels=data.pop("labels"),
            accelerator=data.pop("accelerator"),
            memory_mb=data.pop("memory_mb"),
            batching=data,
            actor=request.user,
            source=Source.from_request(request),
        )
        return Response(ReplicaSetSerializer(self.get_queryset().get(pk=rs.pk)).data, status=202)

    @extend_schema(request=ReplicaSetScaleSerializer, responses={202: ReplicaSetSerializer})
    @action(detail=True, methods=["post"])
    def scale(self, request, pk=None):
        """Add placed replicas or undeploy surplus ones (newest first)."""
        form = ReplicaSetScaleSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        rs = services.scale_replica_set(
            replica_set_id=self.get_object().pk,
            replicas=form.validated_data["replicas"],
            actor=request.user,
            source=Source.from_request(request),
        )
        return Response(ReplicaSetSerializer(self.get_queryset().get(pk=rs.pk)).data, status=202)

    @extend_schema(request=ReplicaSetAutoscaleSerializer, responses={200: ReplicaSetSerializer})
    @action(detail=True, methods=["patch"])
    def autoscale(self, request, pk=None):
        """Change the autoscaling settings (docs/fleet.md "Autoscaling"); the replicas follow at the next tick."""
        form = ReplicaSetAutoscaleSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        rs = services.configure_autoscale(
            replica_set_id=self.get_object().pk,
            actor=request.user,
            source=Source.from_request(request),
            **form.validated_data,
        )
        return Response(ReplicaSetSerializer(self.get_queryset().get(pk=rs.pk)).data)

    @extend_schema(request=None, responses={202: ReplicaSetSerializer})
    @action(detail=True, methods=["post"])
    def retire(self, request, pk=None):
        """Undeploy all its replicas; refused (409 `replica_set_has_traffic`) while it carries traffic."""
        rs = services.retire_replica_set(
            replica_set_id=self.get_object().pk, actor=request.user, source=Source.from_request(request)
        )
        return Response(ReplicaSetSerializer(self.get_queryset().get(pk=rs.pk)).data, status=202)


class BatchingSweepViewSet(viewsets.ReadOnlyModelViewSet):
    """Batching tuner sweeps of replica sets, each on a dedicated replica (docs/tuning.md)."""

    serializer_class = BatchingSweepSerializer
    action_perms = {
        "list": "deployments.view_batchingsweep",
        "retrieve": "deployments.view_batchingsweep",
        "create": "deployments.add_batchingsweep",
        "apply": "deployments.add_rollout",
    }
    filterset_fields = {"replica_set": ["exact"], "replica_set__model__name": ["exact"], "state": ["exact"]}

    def get_queryset(self):
        sweeps = BatchingSweep.objects.select_related(
            "replica_set__model", "replica_set__model_version", "server", "requested_by"
        )
        return restricted_to_token(sweeps, self.request.auth, via="replica_set__model")

    @extend_schema(request=BatchingSweepRequestSerializer, responses={202: BatchingSweepSerializer})
    def create(self, request):
        """Request a sweep (409 `no_traffic_data`, `sweep_in_progress`, `replica_set_retired`,
        `placement_impossible`; 400 `invalid_sweep`); the worker runs it."""
        form = BatchingSweepRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        sets = restricted_to_token(ReplicaSet.objects.filter(pk=data["replica_set"]), request.auth, via="model")
        if getattr(request.auth, "restricted", False) and not sets.exists():
            raise NotFound(
                "replica_set_not_found",
                _("no replica set with id %(replica_set)s") % {"replica_set": data["replica_set"]},
            )
        sweep = tuning.request_batching_sweep(
            replica_set_id=data.pop("replica_set"), actor=request.user, source=Source.from_request(request), **data
        )
        return Response(BatchingSweepSerializer(self.get_queryset().get(pk=sweep.pk)).data, status=202)

    @extend_schema(request=SweepApplySerializer, responses={201: RolloutSerializer})
    @action(detail=True, methods=["post"])
    def apply(self, request, pk=None):
        """Apply the sweep's chosen configuration to its replica set as a config rollout, replica by
        replica (docs/rollouts.md; 409 `sweep_not_done`, `no_chosen_config`, `rollout_in_progress`,
        `batching_unchanged` ...)."""
        form = SweepApplySerializer(data=request.data)
        form.is_valid(raise_exception=True)
        rollout = services.apply_batching_sweep(
            sweep_id=self.get_object().pk, actor=request.user, source=Source.from_request(request),
            **form.validated_data,
        )  # fmt: skip
        return Response(RolloutSerializer(rollout).data, status=201)
