//! Private NATS instances (written next).
