DROP VIEW IF EXISTS incidents_by_error_1m_mv;
DROP TABLE IF EXISTS incidents_by_error_1m;
