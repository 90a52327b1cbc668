//! anypost-operator: the sending-domain side of an email service, as a Kubernetes
//! operator. See the README for what it does and ARCHITECTURE.md for how the code
//! is laid out: `core` (pure rules) ← `adapters` (Kubernetes, DNS, resolver, HTTP)
//! ← `controller` ← `app` (command line and wiring); `telemetry` is a leaf.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod app;
pub mod controller;
pub mod core;
pub mod telemetry;
