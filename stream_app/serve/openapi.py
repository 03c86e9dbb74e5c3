"""The OpenAPI 3.1 document of the serving endpoints (``GET /v1/openapi.json``).

Its schemas are :func:`schemas.json_schema.json_schema` of the very classes that build the
answers (:data:`schemas.serving.SERVING_RECORDS`); its limits come from the worker's settings;
its examples are the README's.
"""

from __future__ import annotations

from schemas.json_schema import json_schema
from schemas.serving import SERVING_RECORDS

#: The example requests (the README shows the same ones).
RANK_EXAMPLE = {"user_id": "u42", "items": ["i7", "i3", "i19"], "scores": [12.1, 9.8, 7.5],
                "alpha": 0.5}


def _component(cls: type) -> dict:
    s = json_schema(cls)
    return {k: v for k, v in s.items() if k not in ("$schema", "$id")}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ErrorBody"}}}}


def openapi_document(settings) -> dict:
    errors = {
        "400": _error("bad request (the field at fault is named)"),
        "401": _error("missing or wrong bearer token"),
        "403": _error("serving disabled: web host not loopback and no token configured"),
        "503": _error("not ready, rebalancing, owner unreachable or timed out: retry "
                      "(Retry-After)"),
    }
    flag = {"type": "boolean", "default": False}
    return {
        "openapi": "3.1.0",
        "info": {"title": "seqstream serving", "version": "1",
                 "description": "Recommendations and re-ranking from each user's live "
                                "sequence. Any worker answers any user (requests are routed "
                                "to the worker that owns the user's partition)."},
        "components": {
            "schemas": {name: _component(cls) for name, cls in SERVING_RECORDS.items()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/users/{user_id}/recommendations": {"get": {
                "summary": "top-K items for the user now (cold start: popular items)",
                "parameters": [
                    {"name": "user_id", "in": "path", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "k", "in": "query", "schema": {
                        "type": "integer", "minimum": 1, "maximum": settings.serve_max_k,
                        "default": min(settings.top_k, settings.serve_max_k)}},
                    {"name": "exclude_seen", "in": "query", "schema": flag},
                    {"name": "actions", "in": "query", "schema": flag},
                ],
                "responses": {"200": {"description": "the recommendations", "content": {
                    "application/json": {"schema": {
                        "$ref": "#/components/schemas/Recommendations"}}}}, **errors},
            }},
            "/v1/rank": {"post": {
                "summary": "re-order candidates for the user (search re-ranking)",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"allOf": [{"$ref": "#/components/schemas/RankRequest"}, {
                        "properties": {"items": {
                            "maxItems": settings.serve_max_candidates}}}]},
                    "example": RANK_EXAMPLE}}},
                "responses": {"200": {"description": "the candidates, best first", "content": {
                    "application/json": {"schema": {
                        "$ref": "#/components/schemas/Ranking"}}}},
                    "413": _error("body over serve_max_request_bytes"), **errors},
            }},
            "/v1/health": {"get": {"summary": "liveness", "security": [],
                                   "responses": {"200": {"description": "live"}}}},
            "/v1/ready": {"get": {"summary": "readiness (503 with the reasons)",
                                  "security": [],
                                  "responses": {"200": {"description": "ready"},
                                                "503": {"description": "not ready"}}}},
            "/v1/openapi.json": {"get": {"summary": "this document", "security": [],
                                         "responses": {"200": {"description": "OpenAPI"}}}},
        },
    }


__all__ = ["RANK_EXAMPLE", "openapi_document"]
