"""Trading Grid integration for Airflow, laid out like an Airflow provider.

- ``trading_grid.hooks.trading_grid``      TradingGridHook (sync, requests) and TradingGridAsyncClient (aiohttp)
- ``trading_grid.operators.trading_grid``  create item, comment, transition, attach file
- ``trading_grid.operators.bulk``          TradingGridBulkPostOperator (many items with inline files, comments, actions)
- ``trading_grid.posts``                   ItemPost, InlineAttachment, ItemAction, PostedItem: the bulk post's data
- ``trading_grid.sensors.trading_grid``    TradingGridItemSensor (deferrable by default)
- ``trading_grid.triggers.trading_grid``   TradingGridItemTrigger (async polling in the triggerer)
- ``trading_grid.links``                   TradingGridItemLink, TradingGridItemsLink (extra links: item / run's items)
- ``trading_grid.refs``                    the one way to derive ``external_ref`` and the Idempotency-Key
- ``trading_grid.exceptions``              error classes whose messages never carry secrets

Only this docstring lives here: importing the package must stay cheap (DAG files parse it).
"""
