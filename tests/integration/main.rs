//! Integration tests: the real `s3spool` binary against a real S3-compatible server (moto)
//! on 127.0.0.1, with objects read back by an independent client (boto3).

mod harness;
mod history;
mod proxy;

mod architecture;
mod bandwidth;
mod chaos;
mod cli;
mod credential_process;
mod credentials;
mod delivery;
mod failures;
mod formats;
mod identity;
mod keys;
mod logs;
mod manifests;
mod network;
mod promise;
mod reload;
mod resilience;
mod schedule;
mod service;
mod verify;
