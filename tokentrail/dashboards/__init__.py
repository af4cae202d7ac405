"""What analysts and operators look at: the seven dashboards (`panels`), their Grafana JSON
(`grafana`) and the self-contained HTML report (`html`). The macro expansion in `macros` is
shared by both. The read records behind the Customers dashboard live in the storage layer
(`tokentrail.storage.reads`), since `events` and `report` write them too."""
