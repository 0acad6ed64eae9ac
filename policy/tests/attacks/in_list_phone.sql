-- expect: prohibited-column
SELECT COUNT(*) FROM residents WHERE phone IN ('13800000000', '13900000000')
