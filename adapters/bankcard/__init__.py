"""Bank-card route: UnionPay online gateway 5.1.0 refunds (退货), queries, back notifications
and the settlement file (CH §6). ``client`` does the HTTP, ``signing`` the signatures,
``translate`` the code tables, ``notify`` the back notifications, ``adapter`` the port."""
