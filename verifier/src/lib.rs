//! Artifact formats, registry I/O and signature verification for marque.
//!
//! * [`artifact`]: the cosign payload and signature manifest formats, built
//!   and parsed in one place.
//! * [`registry`]: a bounded, digest-checked client for OCI registries and
//!   OCI image layouts.
//! * [`sign`] and [`verify`]: signing an image digest and checking its
//!   signatures against trusted keys.
//! * [`save`]: copying images with their signatures, attestations and
//!   referrers into an OCI layout, for verification with no network.
//!
//! This crate does not read key files or prompt for passwords; that is
//! `marque-keys` and the CLI.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod agent;
pub mod artifact;
pub mod attest;
pub mod budget;
pub mod cluster;
pub mod digest;
pub mod export;
pub mod policy;
pub mod reference;
pub mod referrers;
pub mod registry;
pub mod save;
pub mod sign;
pub mod sigstore;
pub mod trust;
pub mod verify;

pub use digest::Digest;
pub use reference::ImageRef;
