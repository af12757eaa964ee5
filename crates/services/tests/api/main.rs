//! Integration tests: real servers on port 0, fresh stores, a reqwest client.

mod helpers;

mod audit_postgres;
mod bad_input;
mod basics;
mod openapi;
mod payments;
mod postgres;
mod replicas;
mod wallet_and_inbox;
