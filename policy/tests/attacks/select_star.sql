-- expect: prohibited-column
SELECT * FROM residents
