"""Typed :class:`aiohttp.web.AppKey` s through which the HTTP handlers reach their services."""

from __future__ import annotations

from aiohttp import web

from component.audit import AuditLog
from component.config import Config
from component.metrics import Metrics

from .storage import Repository

CONFIG = web.AppKey("config", Config)
REPOSITORY = web.AppKey("repository", Repository)
AUDIT = web.AppKey("audit", AuditLog)
METRICS = web.AppKey("metrics", Metrics)
