"""The broker's Prometheus metrics, in a registry of the app's own (tests run many apps)."""

from __future__ import annotations

import dataclasses
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Every counter the operator's ``/metrics`` exports; one instance per application."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("caseline_requests", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram(
            "caseline_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.rejections = Counter(
            "caseline_rejections", "Rejected requests by reason", ["reason"], registry=r
        )
        self.commits = Counter("caseline_commits", "Membership commits accepted", registry=r)
        self.updates = Counter("caseline_updates", "Updates accepted", registry=r)
        self.devices = Gauge("caseline_connected_devices", "Devices with a live stream", registry=r)
        self.connections = Gauge("caseline_stream_connections", "Live stream connections", registry=r)
        self.queue_depth = Gauge("caseline_stream_queue_depth_max", "Deepest stream queue", registry=r)
        self.buffered = Gauge(
            "caseline_stream_buffered_bytes_max",
            "Most bytes of frames one stream connection holds (bounded by stream_buffer_bytes)",
            registry=r,
        )
        self.logins = Counter("caseline_logins", "Logins by outcome", ["outcome"], registry=r)
        # The witnessed broker log.
        self.checkpoints = Counter(
            "caseline_log_checkpoints_signed", "Checkpoints signed (one per group commit)", registry=r
        )
        self.log_size = Gauge("caseline_log_size", "Leaves in the broker log's newest checkpoint", registry=r)
        self.cosignatures = Counter(
            "caseline_witness_cosignatures", "Cosignatures collected, by witness", ["witness"], registry=r
        )
        self.witness_failures = Counter(
            "caseline_witness_failures",
            "Checkpoints a witness did not cosign, by reason",
            ["witness", "reason"],
            registry=r,
        )
        self.witnessed_age = Gauge(
            "caseline_log_seconds_since_witnessed",
            "Seconds since a checkpoint last gained a cosignature (-1: never)",
            registry=r,
        )
        # The edge (issue 14): what its limits refused, and what is open against them.
        self.edge_refusals = Counter(
            "caseline_edge_refusals",
            "Connections and requests refused by the edge limits, by limit",
            ["limit"],
            registry=r,
        )
        self.tcp_connections = Gauge(
            "caseline_tcp_connections", "Open TCP connections counted by the connection limits", registry=r
        )
        self.requests_in_flight = Gauge("caseline_requests_in_flight", "Requests being handled", registry=r)
        self.limits = Gauge(
            "caseline_limit", "Each configured limit, by name (0: switched off)", ["name"], registry=r
        )
        # Attachments (issue 15): the gauges are read from the store when /metrics is asked.
        self.blob_stored = Gauge(
            "caseline_blob_stored_bytes", "Bytes of complete attachment blobs on disk", registry=r
        )
        self.blob_uploads = Gauge(
            "caseline_blob_uploads_in_progress", "Attachment uploads started and not complete", registry=r
        )
        self.blob_in_flight = Gauge(
            "caseline_blob_upload_bytes_in_flight",
            "Declared bytes of uploads in progress not yet received",
            registry=r,
        )
        self.blob_received = Counter(
            "caseline_blob_received_bytes", "Attachment bytes received and stored by PATCH", registry=r
        )
        self.blob_served = Counter(
            "caseline_blob_served_bytes", "Attachment bytes sent by downloads", registry=r
        )
        self.blob_gc_deleted = Counter(
            "caseline_blob_gc_deleted",
            "Uploads and blobs the garbage collector deleted, by kind",
            ["kind"],
            registry=r,
        )

    def export_limits(self, *configs: Any) -> None:
        """Publish every numeric setting of the given dataclasses, so an operator sees what is in force."""
        for config in configs:
            for field in dataclasses.fields(config):
                value = getattr(config, field.name)
                if field.name != "port" and isinstance(value, int | float) and not isinstance(value, bool):
                    self.limits.labels(field.name).set(value)
