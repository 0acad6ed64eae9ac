-- expect: prohibited-column
SELECT gender FROM residents UNION ALL SELECT phone FROM residents
