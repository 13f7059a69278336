"""The service index at `/`: where the docs, the contract, health and metrics are."""

from __future__ import annotations

from pydantic import BaseModel


class HealthLinks(BaseModel):
    live: str
    ready: str
    deep: str


class ServiceLinks(BaseModel):
    docs: str
    openapi: str
    health: HealthLinks
    metrics: str


class ServiceIndex(BaseModel):
    service: str
    version: str
    links: ServiceLinks
