//! Anthropic's Messages API. The key goes in `x-api-key`; requests need an
//! `anthropic-version` (the provider's `anthropic_version` is added when
//! the client sent none, `proxy/headers.rs`). Usage: `message_start`
//! carries input (without cache reads and writes, which it reports beside
//! it), `message_delta` the running output total.

pub mod translate;
