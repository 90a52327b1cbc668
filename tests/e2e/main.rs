//! End-to-end tests: one binary, one module per area. Everything that needs the
//! Kubernetes API runs against a real local control plane (`scripts/dev-cluster`),
//! driven with the same kubectl commands users type.

mod support;

mod chaos;
mod chart;
mod controller;
mod crd;
mod demo;
mod dns_embedded;
mod dns_internet;
mod gitops;
mod health;
mod leadership;
mod observability;
mod pods;
mod replicas;
mod rfc2136;
mod rotation;
mod security;
mod shards;
mod verify;
