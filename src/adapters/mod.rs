//! Adapters between the core and the world: the Kubernetes API, the DNS zone
//! (served embedded, or pushed to an RFC2136 server), the resolver checks go
//! through, and the HTTP endpoints. Each implements or feeds what the core
//! declares; none knows the controller or the command line.

pub mod dns;
pub mod http;
pub mod kube;
pub mod resolver;
