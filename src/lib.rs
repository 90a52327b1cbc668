//! anypost-operator: the sending-domain side of an email service, as a Kubernetes
//! operator. See the README for what it does and how to run it.
#![forbid(unsafe_code)]

pub mod api;
pub mod backend;
pub mod cli;
pub mod controller;
pub mod dns;
pub mod duration;
pub mod naming;
pub mod telemetry;
pub mod verify;
