//! The beanstalkd wire protocol: a pure decoder of commands and an encoder of responses.
