//! The forwarder's upstream pool: [`upstream`] (specs as operators write
//! them, and durations), [`balance`] (policies, Maglev among them in
//! [`maglev`]), [`health`] (active checks and passive ejection as a state
//! machine fed with results and `now`) and [`limits`] (connection limits
//! split between shards).

pub mod balance;
pub mod check;
pub mod clients;
pub mod health;
pub mod limits;
pub mod maglev;
pub mod upstream;
