//! One module per subcommand.
pub mod admin;
pub mod config;
pub mod credentials;
pub mod doctor;
pub mod peer;
pub mod serve;
pub mod signal;
pub mod stun;
pub mod token;
pub mod turn;
