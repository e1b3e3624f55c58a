//! End-to-end tests: the real `marque` binary against a real registry
//! (Debian's docker-registry, started here) and the real cosign and skopeo.

mod agent;
mod attacks;
mod attestations;
mod auth;
mod certificates;
mod cluster;
mod common;
mod concurrency;
mod fail_closed;
mod harness;
mod interop;
mod keys_cli;
mod layout;
mod offline;
mod policy;
mod referrers;
mod referrers_api;
mod sign_verify;
mod support;
