-- expect: prohibited-column
SELECT CAST(phone AS VARCHAR) FROM residents
