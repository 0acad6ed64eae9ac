-- expect: conditional-rows
SELECT DISTINCT district FROM residents
