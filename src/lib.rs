//! fleetctl: a declarative reconciliation controller for small fleets of VPS hosts.
//!
//! # Layout
//!
//! Decisions are pure functions over snapshots; only a few modules do I/O.
//!
//! | module | owns | I/O |
//! |---|---|---|
//! | [`manifest`] | YAML → validated [`manifest::DesiredFleet`], every error with its location | none |
//! | [`container`] | the engine-neutral container model shared by planner and transport | none |
//! | [`capacity`] | per-node capacity arithmetic and the capacity report | none |
//! | [`condition`] | a node's scheduling condition (cordoned, draining, drained) and its guarded transitions | none |
//! | [`registry`] | the registry of an image; credentials from the manifests and the operator's Docker config | files, environment, credential helpers |
//! | [`transport`] | SSH + Docker Engine API behind the [`transport::NodeRuntime`] trait | yes |
//! | [`revisions`] | what a converged apply put in force, numbered; the one-line summary of a change; loading a revision for `rollback` | the state store |
//! | [`controller`] | `fleetctl run`: the loop (triggers, backoff, node loss, eviction, intents) | via the others |
//! | [`api`] | the controller's HTTP API (axum), bearer token | HTTP |
//! | [`metrics`] | Prometheus metrics; the timing decorator of [`transport::NodeRuntime`] | none |
//! | [`cli`] | argument parsing, output rendering, exit codes | terminal |
//!
//! Nothing depends on [`cli`]; the library never prints.

pub mod adopt;
pub mod api;
pub mod archive;
pub mod backoff;
pub mod capacity;
pub mod cli;
pub mod condition;
pub mod container;
pub mod controller;
pub mod converge;
pub mod desired;
pub mod disk;
pub mod drain;
pub mod execute;
pub mod images;
pub mod lease;
pub mod load;
pub mod logs;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod network;
pub mod observe;
pub mod plan;
pub mod plugs;
pub mod reconcile;
pub mod records;
pub mod registry;
pub mod revisions;
pub mod schedule;
pub mod secrets;
pub mod state_location;
pub mod store;
pub mod transport;
pub mod view;
