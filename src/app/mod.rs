//! The top: the command line ([`cli`]) and what each command wires together:
//! [`run`] (the controller, the zone, the endpoints), [`check`] and [`crd`].

pub mod check;
pub mod cli;
pub mod crd;
pub mod run;
