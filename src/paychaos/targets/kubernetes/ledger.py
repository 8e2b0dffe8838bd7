"""The fault ledger of a Kubernetes target, in the cluster itself: a ConfigMap holds one record per
active fault, a Lease is the experiment lock.

In the cluster rather than on the machine that ran the experiment, so that `paychaos halt` from
any machine, or a restarted operator, finds and reverts what a dead run left. A record is one key
of the ConfigMap, written with a merge patch: a reader sees a record whole or not at all. The
Lease is created to take the lock (the API server refuses a second create: the atomic step) and
deleted to release it; its holder is an annotation.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from paychaos.faults.records import FaultRecord, LockHolder

FAULTS_CONFIGMAP = "paychaos-faults"
LOCK_LEASE = "paychaos-experiment"
HOLDER_ANNOTATION = "paychaos.io/holder"
MANAGED_BY = {"app.kubernetes.io/managed-by": "paychaos"}


class ClusterLedger:
    def __init__(self, api_client: Any, namespace: str) -> None:
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.where = f"namespace {namespace} (ConfigMap {FAULTS_CONFIGMAP}, Lease {LOCK_LEASE})"

    # -- records ------------------------------------------------------------------------------

    def _data(self) -> dict[str, str]:
        try:
            return self.core.read_namespaced_config_map(FAULTS_CONFIGMAP, self.namespace).data or {}
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise

    def write(self, record: FaultRecord) -> None:
        patch = {"data": {record.id: record.model_dump_json()}}
        try:
            self.core.patch_namespaced_config_map(FAULTS_CONFIGMAP, self.namespace, patch)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {"metadata": {"name": FAULTS_CONFIGMAP, "labels": MANAGED_BY}, **patch}
            try:
                self.core.create_namespaced_config_map(self.namespace, body)
            except ApiException as again:
                if again.status != 409:  # created by another writer meanwhile: patch it
                    raise
                self.core.patch_namespaced_config_map(FAULTS_CONFIGMAP, self.namespace, patch)

    def read(self, fault_id: str) -> FaultRecord | None:
        text = self._data().get(fault_id)
        return FaultRecord.model_validate_json(text) if text else None

    def records(self) -> list[FaultRecord]:
        return [FaultRecord.model_validate_json(text) for text in self._data().values()]

    def forget(self, fault_id: str) -> None:
        if fault_id not in self._data():
            return
        try:  # a merge patch with null removes the key
            self.core.patch_namespaced_config_map(FAULTS_CONFIGMAP, self.namespace, {"data": {fault_id: None}})
        except ApiException as exc:
            if exc.status != 404:
                raise

    # -- the lock -----------------------------------------------------------------------------

    def _lease(self) -> Any | None:
        try:
            return self.coordination.read_namespaced_lease(LOCK_LEASE, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def read_lock(self) -> LockHolder | None:
        lease = self._lease()
        text = (lease.metadata.annotations or {}).get(HOLDER_ANNOTATION) if lease is not None else None
        try:
            return LockHolder.model_validate_json(text) if text else None
        except ValueError:
            return None

    def try_lock(self, holder: LockHolder) -> bool:
        now = dt.datetime.now(dt.UTC)
        body = {
            "metadata": {"name": LOCK_LEASE, "labels": MANAGED_BY,
                         "annotations": {HOLDER_ANNOTATION: holder.model_dump_json()}},
            "spec": {"holderIdentity": f"{holder.owner.host}/{holder.owner.pid}", "acquireTime": now, "renewTime": now},
        }
        try:
            self.coordination.create_namespaced_lease(self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def lock_just_taken(self) -> bool:
        lease = self._lease()
        if lease is None or lease.metadata.creation_timestamp is None:
            return False
        return (dt.datetime.now(dt.UTC) - lease.metadata.creation_timestamp).total_seconds() < 2

    def unlock(self) -> None:
        try:
            self.coordination.delete_namespaced_lease(LOCK_LEASE, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
