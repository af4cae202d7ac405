DROP VIEW IF EXISTS policy_decisions_1m_mv;
DROP TABLE IF EXISTS policy_decisions_1m;
