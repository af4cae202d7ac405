DROP TABLE IF EXISTS failure_patterns;
