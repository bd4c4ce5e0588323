//! The YAML contract (SPEC section 2) as plain data: what a user wrote, with
//! secrets interpolated and every syntax or type problem located by its YAML
//! path. Whether it makes sense (references resolve, keys parse, URLs are safe)
//! is decided once, when the policy compiles it; nothing here knows the stages.
//!
//! `schema` holds the typed shape, `document` reads the YAML (refusing repeated
//! keys), `load` turns a file into a [`Config`],
//! `interpolate` fills in secrets (`secrets`: those not read), `value_de` keeps values out of messages,
//! `problem` is the one shape of a config problem, `json_schema` describes the
//! file for editors, `hasura_secret` is a pasted HASURA_GRAPHQL_JWT_SECRET's shape.

mod document;
mod events;
mod hasura_secret;
mod interpolate;
pub mod json_schema;
mod load;
mod problem;
mod schema;
mod secrets;
pub mod value_de;

pub use events::*;
pub use hasura_secret::{HasuraHeaderFields, HasuraSecretFields, OneOrMany};
pub use load::{load_file, parse_str, read_file, read_str, read_str_with};
pub use problem::{ConfigError, Problem, Problems, join_path};
pub use schema::*;
pub use secrets::{Placeholder, Secret, Secrets, Section, Unresolved};
