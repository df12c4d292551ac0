-- Database-per-service: each service owns its database and migrates it.
CREATE DATABASE auth;
CREATE DATABASE tasks;
