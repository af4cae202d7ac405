"""What analysts and operators look at: the seven dashboards (`panels`), their Grafana JSON
(`grafana`), the self-contained HTML report (`html`), and the read records behind the
Customers dashboard (`reads`). The macro expansion in `macros` is shared by all of them."""
