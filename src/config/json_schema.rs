//! The JSON Schema of `portcullis.yaml`, for editors (completion, hover text,
//! red squiggles while typing) and for CI checks before `check-config` runs.
//!
//! Most of it is derived from the config types in `schema.rs` (doc comments
//! become descriptions, serde defaults become `default`s), so it cannot drift
//! from what the loader reads. The parts the loader assembles by hand get their
//! schema here: the top level (sections read one by one, `routes` required),
//! backends (told apart by `type`), `token_from` (two shapes, checked by hand),
//! and a few fields whose accepted forms are wider than their Rust type. The
//! mapping form of `hasura_jwt_secret` is derived from the plain data Hasura's
//! parser reads (`hasura_secret.rs`), the one place its keys are defined.
//!
//! It describes the file as written: `${...}` is expanded only inside strings
//! and a string never becomes a number or a boolean, so a number or boolean
//! field takes no `${...}` placeholder here either. Draft 7: the newest draft
//! the YAML language server and most editors understand fully.

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use super::{
    AdminConfig, AuthHookConfig, BackendConfig, CacheConfig, Config, DecisionLogConfig, DefaultsConfig, FacesConfig,
    HasuraBackendConfig, IssuerConfig, LimitsConfig, Listen, RevocationConfig, RouteConfig, StateConfig,
    SupabaseBackendConfig, TelemetryConfig, TokenFrom, WebhookConfig,
};

/// The schema `portcullis schema` prints: pretty JSON with a trailing newline.
pub fn json_schema_text() -> String {
    let schema = SchemaSettings::draft07().into_generator().into_root_schema_for::<Config>();
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is plain JSON");
    text.push('\n');
    text
}

impl JsonSchema for Config {
    fn schema_name() -> Cow<'static, str> {
        "portcullis".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        // The loader reads each section on its own; an empty section (`listen:`) is
        // the same as an absent one, hence the `null`s. Without `routes` every
        // request would be denied, so the loader insists on the list.
        json_schema!({
            "title": "portcullis configuration",
            "description": "portcullis.yaml: listeners, identity providers, backends and routes. Any string may hold ${NAME} (an environment variable) or ${file:PATH} (a file's trimmed content). Unknown keys are errors.",
            "type": "object",
            "additionalProperties": false,
            "required": ["routes"],
            "properties": {
                "listen": described(generator.subschema_for::<Option<Listen>>(), "Listening addresses, and TLS for the gRPC ports and the HTTP authorization port."),
                "admin": described(generator.subschema_for::<Option<AdminConfig>>(), "The Admin API."),
                "cache": described(generator.subschema_for::<Option<CacheConfig>>(), "The verified-token cache."),
                "limits": described(generator.subschema_for::<Option<LimitsConfig>>(), "How much of a request portcullis reads, and how many Checks it runs at once."),
                "defaults": described(generator.subschema_for::<Option<DefaultsConfig>>(), "Defaults for authenticating routes without a backend."),
                "decision_log": described(generator.subschema_for::<Option<DecisionLogConfig>>(), "One JSON line per decision, when set."),
                "telemetry": described(generator.subschema_for::<Option<TelemetryConfig>>(), "OpenTelemetry traces, when set (the OTEL_* environment can also turn them on)."),
                "faces": described(generator.subschema_for::<Option<FacesConfig>>(), "Settings of the HTTP faces on listen.http_authz: Envoy's HTTP ext_authz and forward auth (nginx, Traefik, Caddy)."),
                "issuers": named_map(
                    generator.subschema_for::<IssuerConfig>(),
                    "Identity providers, by a name you choose; routes name them in `issuers`.",
                ),
                "backends": named_map(
                    generator.subschema_for::<BackendConfig>(),
                    "Upstreams that need their own headers (Hasura, Supabase), by a name you choose; routes name them in `backend`.",
                ),
                "routes": {
                    "description": "The rules, first match wins; a request no route matches is refused (403).",
                    "type": "array",
                    "items": generator.subschema_for::<RouteConfig>(),
                },
                "webhooks": {
                    "description": "Identity-provider webhooks verified at the edge (Kinde, Standard Webhooks, Svix/Clerk, WorkOS); matched before routes.",
                    "type": ["array", "null"],
                    "items": generator.subschema_for::<WebhookConfig>(),
                },
                "revocation": described(generator.subschema_for::<Option<RevocationConfig>>(), "Revoked subjects and tokens: fed by webhook events and the Admin API."),
                "state": described(generator.subschema_for::<Option<StateConfig>>(), "Where first-seen event ids and revocations are kept: `memory` (the default, one replica) or Redis (every replica)."),
                "auth_hooks": {
                    "description": "Hasura auth webhooks (HASURA_GRAPHQL_AUTH_HOOK) on listen.http_authz, GET or POST mode.",
                    "type": ["array", "null"],
                    "items": generator.subschema_for::<AuthHookConfig>(),
                },
            },
        })
    }
}

/// `issuers` and `backends`: a mapping from a chosen name to one item, or empty.
fn named_map(item: Schema, description: &str) -> Schema {
    json_schema!({
        "description": description,
        "type": ["object", "null"],
        "additionalProperties": item,
    })
}

fn described(mut schema: Schema, description: &str) -> Schema {
    schema.insert("description".into(), description.into());
    schema
}

impl JsonSchema for BackendConfig {
    fn schema_name() -> Cow<'static, str> {
        "BackendConfig".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        // Each variant's `type` is a `const`, so exactly one can match; the
        // `enum` beside them gives a mistyped `type` its own plain message.
        json_schema!({
            "description": "A backend, told apart by its `type`.",
            "type": "object",
            "required": ["type"],
            "properties": { "type": { "description": "Which backend: `hasura` or `supabase`.", "enum": ["hasura", "supabase"] } },
            "oneOf": [
                generator.subschema_for::<HasuraBackendConfig>(),
                generator.subschema_for::<SupabaseBackendConfig>(),
            ],
        })
    }
}

impl JsonSchema for TokenFrom {
    fn schema_name() -> Cow<'static, str> {
        "TokenFrom".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // The loader reads all three keys as optional strings, then insists on
        // exactly one of the two shapes with a non-empty name (a key written as
        // `null` counts as absent).
        json_schema!({
            "description": "Where the token is found in the request: `{ header: NAME }` (for `authorization` the `Bearer` scheme; for other headers the whole value), `{ header: NAME, prefix: \"JWT \" }`, or `{ cookie: NAME }`.",
            "oneOf": [
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["header"],
                    "properties": {
                        "header": { "description": "The header name (case-insensitive).", "type": "string", "minLength": 1 },
                        "prefix": { "description": "What precedes the token in the value; default: the `Bearer` scheme for `authorization`, nothing otherwise.", "type": ["string", "null"] },
                        "cookie": { "type": "null" },
                    },
                },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["cookie"],
                    "properties": {
                        "cookie": { "description": "The cookie name.", "type": "string", "minLength": 1 },
                        "header": { "type": "null" },
                        "prefix": { "type": "null" },
                    },
                },
            ],
        })
    }
}

/// `issuers.<name>.audiences`: a list, or the word `any` (the field is optional;
/// `null` is added by `Option`).
pub struct Audiences;

impl JsonSchema for Audiences {
    fn schema_name() -> Cow<'static, str> {
        "Audiences".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "oneOf": [
                { "type": "array", "items": { "type": "string" } },
                { "const": "any" },
            ],
        })
    }
}

/// `claims_map` (on a Hasura backend or in `hasura_jwt_secret`): Hasura's own
/// shape, checked when the policy compiles; the two role variables are required,
/// and an entry that is a mapping with `path` takes `default` and nothing else.
pub struct ClaimsMap;

impl JsonSchema for ClaimsMap {
    fn schema_name() -> Cow<'static, str> {
        "ClaimsMap".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Session variable (x-hasura-*) -> a literal value, or { path: JSONPath, default: value }; x-hasura-allowed-roles and x-hasura-default-role are required.",
            "type": "object",
            "required": ["x-hasura-allowed-roles", "x-hasura-default-role"],
            "additionalProperties": {
                "anyOf": [
                    {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["path"],
                        "properties": {
                            "path": { "description": "A JSONPath into the claims, e.g. $.roles[*].key.", "type": "string" },
                            "default": { "description": "The value when the path finds nothing." },
                        },
                    },
                    { "not": { "type": "object", "required": ["path"] } },
                ],
            },
        })
    }
}

/// `issuers.<name>.hasura_jwt_secret`: the JSON text of a
/// `HASURA_GRAPHQL_JWT_SECRET` (typically `${HASURA_GRAPHQL_JWT_SECRET}`), or
/// the same object written as YAML, whose keys come from Hasura's parser.
pub struct HasuraJwtSecret;

impl JsonSchema for HasuraJwtSecret {
    fn schema_name() -> Cow<'static, str> {
        "HasuraJwtSecretValue".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "string", "description": "The JSON text of a HASURA_GRAPHQL_JWT_SECRET, e.g. ${HASURA_GRAPHQL_JWT_SECRET}." },
                generator.subschema_for::<super::HasuraSecretFields>(),
            ],
        })
    }
}

/// For values computed on the machine (`limits.concurrent_checks` grows with
/// the cores): the schema must be the same everywhere, so the default is told
/// in the description instead.
pub fn without_default(schema: &mut Schema) {
    schema.remove("default");
}
